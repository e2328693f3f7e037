"""The ``changes`` projection, the validity intervals and the change-aware timeline sentences.

Derived from each entity's versions in §6 version order, so they are the same whatever the
arrival order and however the events were split into batches, and a rebuild gives the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path
from projections import rebuild
from tests.support.audit_story import at, fixture_events
from tests.support.direct import append_all, connect, new_store
from tests.support.history import Event, deliveries, envelope, histories
from tests.test_projection_properties import store_with

DERIVED = ("entity_versions", "changes", "membership_roles", "user_bans")
_ORDER = {
    "entity_versions": "object_type, entity_id, version_ms, version_rank, event_id",
    "changes": "entity_id, version_ms, version_rank, event_id, field",
    "membership_roles": "membership_id, valid_from",
    "user_bans": "user_id, valid_from",
}


def derived(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    rows = {t: conn.execute(f"SELECT * FROM {t} ORDER BY {_ORDER[t]}").fetchall() for t in DERIVED}
    rows["summaries"] = conn.execute(
        "SELECT event_id, summary FROM audit_timeline ORDER BY event_id"
    ).fetchall()
    return rows


def _append_in_chunks(path: Path, events: list[Event], sizes: list[int]) -> sqlite3.Connection:
    conn = new_store(path)
    start = 0
    for size in [*sizes, len(events)]:
        if start >= len(events):
            break
        append_all(conn, [(e.event_id, e.body) for e in events[start : start + size]])
        start += size
    return conn


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), events=histories())
def test_changes_are_the_same_in_any_order_and_batching_and_after_a_rebuild(
    data: st.DataObject, events: list[Event], tmp_path_factory: Any
) -> None:
    shuffled = data.draw(deliveries(events))
    sizes = data.draw(st.lists(st.integers(1, 4), max_size=len(shuffled)))
    folder = tmp_path_factory.mktemp("changes")
    with store_with(sorted(events, key=lambda e: e.version)) as (_, in_order):
        expected = derived(in_order)
    conn = _append_in_chunks(folder / "audit.db", shuffled, sizes)
    try:
        assert derived(conn) == expected
        rebuild(folder / "audit.db", default_projections_path(folder / "audit.db"))
        rebuilt = connect(folder / "audit.db")
        assert derived(rebuilt) == expected
        rebuilt.close()
    finally:
        conn.close()
    _check_first_names(events, expected["changes"])


def _check_first_names(events: list[Event], changes: list[tuple[Any, ...]]) -> None:
    """Each user's first-name changes are those between consecutive full snapshots."""
    for user in {e.entity_id for e in events if e.object_type == "user"}:
        mine = (e for e in events if e.entity_id == user and e.full)
        full = sorted(mine, key=lambda e: e.version)
        names = [orjson.loads(e.body)["data"]["first_name"] for e in full]
        wanted = [
            (e.event_id, b, a)
            for e, b, a in zip(full[1:], names, names[1:], strict=False)
            if b != a
        ]
        found = [(c[4], c[6], c[7]) for c in changes if c[0] == user and c[5] == "first_name"]
        assert found == wanted


def test_a_fixture_history_gives_exact_changes_intervals_and_sentences(tmp_path: Path) -> None:
    conn = new_store(tmp_path / "audit.db")
    for event in reversed(fixture_events()):  # newest first: every "previous" arrives late
        append_all(conn, [event])
    changes = conn.execute(
        "SELECT event_id, field, before, after FROM changes "
        "ORDER BY entity_id, version_ms, version_rank, event_id, field"
    ).fetchall()
    assert changes == [
        ("msg_07", "role", "org:member", "org:admin"),
        ("msg_08", "deleted", "no", "yes"),
        ("msg_02", "banned", "no", "yes"),
        ("msg_03", "banned", "yes", "no"),
        ("msg_03", "totp_enabled", "no", "yes"),
        ("msg_03", "two_factor_enabled", "no", "yes"),
        ("msg_04", "password", None, "(secret)"),
        ("msg_04", "password_enabled", "no", "yes"),
        ("msg_04", "private_metadata", None, "(secret)"),
        ("msg_05", "email_addresses", "maya@example.com", "maia@example.com, maya@example.com"),
        ("msg_05", "first_name", "Maya", "Maia"),
        ("msg_05", "primary_email_address", "maya@example.com", "maia@example.com"),
    ]
    summaries = dict(conn.execute("SELECT event_id, summary FROM audit_timeline").fetchall())
    assert summaries["msg_02"] == "User Maya Okafor: banned"
    assert summaries["msg_03"] == (
        "User Maya Okafor: unbanned; two-factor authentication turned on; authenticator app added"
    )
    assert summaries["msg_04"] == "User Maya Okafor: password set"
    assert summaries["msg_05"] == (
        "User Maia Okafor: primary email changed from maya@example.com to maia@example.com; "
        "name changed from Maya Okafor to Maia Okafor"
    )
    assert summaries["msg_07"] == (
        "Maya Okafor is now admin in Harbor (role changed from member to admin)"
    )
    assert conn.execute("SELECT * FROM membership_roles ORDER BY valid_from").fetchall() == [
        ("orgmem_1", at(1), "org_h", "user_maya", "org:member", at(5)),
        ("orgmem_1", at(5), "org_h", "user_maya", "org:admin", at(9)),
    ]
    assert conn.execute("SELECT * FROM user_bans").fetchall() == [("user_maya", at(1), at(2))]
    assert b"s3cret" not in (tmp_path / "audit.projections.db").read_bytes()
    conn.close()


def _awkward_events() -> list[tuple[str, bytes]]:
    """The fixture story in version order, plus what in-order batches must still get right:
    an update without an envelope timestamp, one whose timestamp is earlier than a previous
    version's (clock skew), and a membership snapshot newer than its delete."""
    story = sorted(fixture_events(), key=lambda e: e[0])
    user = orjson.loads(dict(story)["msg_05"])["data"]
    membership = orjson.loads(dict(story)["msg_06"])["data"]
    undated = {**user, "updated_at": user["updated_at"] + 10_000, "last_name": "O."}
    skewed = {**user, "updated_at": user["updated_at"] + 20_000, "last_name": "Okafor-Bell"}
    late = {**membership, "updated_at": membership["updated_at"] + 60_000, "role": "org:owner"}
    return [
        *story,
        ("msg_30", envelope("user.updated", undated, None)),
        ("msg_31", envelope("user.updated", skewed, user["updated_at"] + 1)),
        ("msg_32", envelope("organizationMembership.updated", late, late["updated_at"])),
    ]


def test_events_in_order_split_anywhere_give_the_rows_of_one_batch(tmp_path: Path) -> None:
    """The projector continues an entity from what its stored versions derived when a batch
    only adds later versions; wherever the batches split, the rows are those of one pass."""
    events = _awkward_events()
    whole = new_store(tmp_path / "whole.db")
    append_all(whole, events)
    expected = derived(whole)
    whole.close()
    assert not any(row[4] == "org:owner" for row in expected["membership_roles"])  # deleted
    for cut in range(1, len(events)):
        conn = new_store(tmp_path / f"cut{cut}.db")
        append_all(conn, events[:cut])
        append_all(conn, events[cut:])
        assert derived(conn) == expected, f"split before event {cut}"
        conn.close()
