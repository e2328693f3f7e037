"""CONTRACT §6 as properties over generated histories (Hypothesis).

Any permutation of a history, with any duplicates, gives the same state digest; the live
projections always equal a rebuild; a delete is never undone by a late update; a delete stub
never erases the last full snapshot; the winning snapshot is the one with the greatest version.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path
from projections import rebuild
from projections.entities import BY_OBJECT_TYPE
from tests.support.direct import append_all, connect, digest, misindexed, new_store
from tests.support.history import Event, deliveries, histories

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@contextmanager
def store_with(events: list[Event]) -> Iterator[tuple[Path, sqlite3.Connection]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.db"
        conn = new_store(path)
        try:
            append_all(conn, [(e.event_id, e.body) for e in events])
            yield path, conn
        finally:
            conn.close()


def _row(conn: sqlite3.Connection, event: Event) -> sqlite3.Row:
    table = BY_OBJECT_TYPE[event.object_type].table
    conn.row_factory = sqlite3.Row
    row: sqlite3.Row | None = conn.execute(
        f"SELECT * FROM {table} WHERE id = ?", (event.entity_id,)
    ).fetchone()
    conn.row_factory = None
    assert row is not None, f"{event.entity_id} is missing from {table}"
    return row


@PROPERTY_SETTINGS
@given(data=st.data(), events=histories())
def test_any_order_and_duplicates_give_the_same_digest(
    data: st.DataObject, events: list[Event]
) -> None:
    shuffled = data.draw(deliveries(events))
    with store_with(events) as (_, first), store_with(shuffled) as (_, second):
        assert digest(first) == digest(second)


@PROPERTY_SETTINGS
@given(data=st.data(), events=histories())
def test_live_projections_equal_a_rebuild(data: st.DataObject, events: list[Event]) -> None:
    shuffled = data.draw(deliveries(events))
    with store_with(shuffled) as (path, conn):
        live = digest(conn)
        assert misindexed(conn) == []
        projections = default_projections_path(path)
        assert rebuild(path, projections, check=True).differences == ()
        result = rebuild(path, projections)
        assert result.digest == live
        assert digest(conn) == live, "the old generation changed under its reader"
        rebuilt = connect(path)
        assert digest(rebuilt) == live
        assert misindexed(rebuilt) == []
        rebuilt.close()


@PROPERTY_SETTINGS
@given(data=st.data(), events=histories())
def test_the_greatest_version_wins_and_deletes_are_final(
    data: st.DataObject, events: list[Event]
) -> None:
    shuffled = data.draw(deliveries(events))
    with store_with(shuffled) as (_, conn):
        for entity_id in {e.entity_id for e in events}:
            mine = [e for e in events if e.entity_id == entity_id]
            row = _row(conn, mine[0])
            _check_entity(row, mine)


def _check_entity(row: sqlite3.Row, events: list[Event]) -> None:
    deletes = [e for e in events if e.is_delete]
    assert row["deleted"] == (1 if deletes else 0), "a delete was undone or invented"
    full = [e for e in events if e.full]
    if not full:
        assert row["data"] is None
        return
    winner = max(full, key=lambda e: e.version)
    assert row["event_id"] == winner.event_id, "the greatest version did not win"
    assert row["data"] is not None, "a delete stub erased the last full snapshot"
    assert json.loads(row["data"]) == json.loads(winner.body)["data"]


@PROPERTY_SETTINGS
@given(events=histories())
def test_every_event_has_exactly_one_timeline_row(events: list[Event]) -> None:
    with store_with(events + events[: len(events) // 2]) as (_, conn):
        rows = conn.execute("SELECT event_id FROM audit_timeline ORDER BY event_id").fetchall()
        assert [r[0] for r in rows] == sorted(e.event_id for e in events)
