"""Rebuilding every projection from the log, while the server keeps ingesting.

1. Note the log head ``upto``. Create empty shadow tables (``_rebuild_<table>``).
2. Stream the log up to ``upto`` in position order. Each event's timeline row goes to the
   shadow timeline in batches; each claim is reduced in memory to the best claim per entity
   (its key and position only, so memory grows with entities, not events).
3. Read back the winning events, write their rows, then index the shadow tables.
4. In one ``BEGIN IMMEDIATE`` transaction: project the events appended since ``upto`` into the
   shadow tables (the live rule), then drop the live tables and rename the shadows in place.

Steps 1-3 write in short transactions, so the server's writer is held up for a batch at most
(an index build on the largest table being the longest). Readers see the old projections
until step 4 commits, then the new ones. ``--check`` stops before the swap, compares the
shadow with the live tables under the write lock, and drops the shadow.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from eventstore.db import open_store, transaction
from eventstore.log import log_position
from projections.apply import apply_event, insert_timeline, upsert_sql
from projections.digest import state_digest, table_digests
from projections.entities import SPECS, EntitySpec
from projections.fold import Claim, ClaimKey, LoggedEvent, claim, entity_row, parse_logged
from projections.fold import timeline_row as make_timeline_row
from projections.schema import INDEXES, TIMELINE, index_ddl
from projections.tables import (
    SHADOW_NAMES,
    create_fresh,
    create_tables,
    drop_tables,
    generation,
    is_current,
    row_counts,
    swap_in,
)

Progress = Callable[[int], None]
"""Told how many more events were read."""

SCAN_BATCH = 5_000
FETCH_BATCH = 500


@dataclass(frozen=True, slots=True)
class RebuildResult:
    events: int
    """Events projected (quarantined ones are in the log but never projected)."""
    position: int
    """The log position the projections reflect."""
    rows: dict[str, int]
    digests: dict[str, str]
    differences: tuple[str, ...] = field(default=())
    """With ``check``: the tables whose live contents differ from a rebuild."""

    @property
    def digest(self) -> str:
        return state_digest(self.digests)


class Winners:
    """The best claim seen per entity, and whether and when any claim deleted it."""

    def __init__(self) -> None:
        self._best: dict[tuple[EntitySpec, str], list[object]] = {}

    def add(self, found: Claim, position: int) -> None:
        entry = self._best.get((found.spec, found.entity_id))
        if entry is None:
            self._best[(found.spec, found.entity_id)] = [
                found.key,
                position,
                found.is_delete,
                found.deleted_at,
            ]
            return
        best_key: ClaimKey = entry[0]  # type: ignore[assignment]
        if found.key > best_key:
            entry[0], entry[1] = found.key, position
        if found.is_delete:
            entry[2] = True
            entry[3] = _earliest(entry[3], found.deleted_at)  # type: ignore[arg-type]

    def positions(self) -> dict[int, tuple[bool, str | None]]:
        """``{position of a winning event: (deleted, deleted_at) of its entity}``."""
        return {e[1]: (e[2], e[3]) for e in self._best.values()}  # type: ignore[misc]


def _earliest(a: str | None, b: str | None) -> str | None:
    return min(a, b) if a is not None and b is not None else a or b


def scan(
    conn: sqlite3.Connection, after: int, upto: int | None = None, batch: int = SCAN_BATCH
) -> Iterator[list[LoggedEvent]]:
    """The log's projectable events in ``(after, upto]``, in position order, in batches."""
    limit = "AND position <= ?" if upto is not None else ""
    sql = (
        f"SELECT position, event_id, body FROM events WHERE position > ? {limit} "
        "AND status = 'ok' ORDER BY position LIMIT ?"
    )
    while True:
        args = (after, upto, batch) if upto is not None else (after, batch)
        rows = conn.execute(sql, args).fetchall()
        if not rows:
            return
        events = [e for row in rows if (e := parse_logged(*row)) is not None]
        yield events
        after = rows[-1][0]


def _fill_timeline(
    conn: sqlite3.Connection, upto: int, winners: Winners, progress: Progress | None
) -> int:
    count = 0
    for events in scan(conn, 0, upto):
        rows = []
        for event in events:
            rows.append(make_timeline_row(event))
            found = claim(event)
            if found is not None:
                winners.add(found, event.position)
        with transaction(conn):
            insert_timeline(conn, rows, SHADOW_NAMES[TIMELINE])
        count += len(events)
        if progress is not None:
            progress(len(events))
    return count


def _winning_rows(
    conn: sqlite3.Connection, wanted: dict[int, tuple[bool, str | None]]
) -> Iterator[tuple[EntitySpec, tuple[object, ...]]]:
    positions = sorted(wanted)
    for start in range(0, len(positions), FETCH_BATCH):
        chunk = positions[start : start + FETCH_BATCH]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT position, event_id, body FROM events WHERE position IN ({marks})", chunk
        ).fetchall()
        for row in rows:
            event = parse_logged(*row)
            found = claim(event) if event is not None else None
            if event is None or found is None:
                continue
            yield found.spec, entity_row(found, event, wanted[row[0]])


def _fill_entities(conn: sqlite3.Connection, winners: Winners) -> None:
    batches: dict[EntitySpec, list[tuple[object, ...]]] = {spec: [] for spec in SPECS}
    for spec, row in _winning_rows(conn, winners.positions()):
        batches[spec].append(row)
        if len(batches[spec]) >= SCAN_BATCH:
            _flush(conn, spec, batches[spec])
    for spec, rows in batches.items():
        _flush(conn, spec, rows)


def _flush(conn: sqlite3.Connection, spec: EntitySpec, rows: list[tuple[object, ...]]) -> None:
    if rows:
        with transaction(conn):
            conn.executemany(upsert_sql(spec, SHADOW_NAMES[spec.table]), rows)
        rows.clear()


def build_shadow(conn: sqlite3.Connection, upto: int, gen: int, progress: Progress | None) -> int:
    """Steps 1-3 of the module docstring; returns the number of events projected."""
    with transaction(conn):
        drop_tables(conn, SHADOW_NAMES)
        create_tables(conn, SHADOW_NAMES)
    winners = Winners()
    count = _fill_timeline(conn, upto, winners, progress)
    _fill_entities(conn, winners)
    for index in INDEXES:
        with transaction(conn):
            conn.execute(index_ddl(index, SHADOW_NAMES[index.table], gen))
    return count


def catch_up(conn: sqlite3.Connection, upto: int) -> int:
    """Project the events after ``upto`` into the shadow tables (inside the caller's
    transaction); returns how many."""
    count = 0
    for events in scan(conn, upto):
        for event in events:
            apply_event(conn, event, SHADOW_NAMES)
        count += len(events)
    return count


def _differences(conn: sqlite3.Connection) -> tuple[str, ...]:
    live = table_digests(conn)
    rebuilt = table_digests(conn, SHADOW_NAMES)
    return tuple(table for table in live if live[table] != rebuilt[table])


def rebuild(path: Path, *, check: bool = False, progress: Progress | None = None) -> RebuildResult:
    """Rebuild (or with ``check``, rebuild aside and compare) the projections of ``path``."""
    conn = open_store(path, synchronous="NORMAL")
    try:
        conn.execute("PRAGMA legacy_alter_table = ON")
        upto = log_position(conn)
        gen = generation(conn) + 1
        count = build_shadow(conn, upto, gen, progress)
        conn.execute("PRAGMA synchronous = FULL")
        differences: tuple[str, ...] = ()
        with transaction(conn):
            count += catch_up(conn, upto)
            position = log_position(conn)
            if check:
                differences = _differences(conn)
                drop_tables(conn, SHADOW_NAMES)
            else:
                swap_in(conn, SHADOW_NAMES, gen)
        return _result(conn, count, position, differences)
    finally:
        conn.close()


def _result(
    conn: sqlite3.Connection, count: int, position: int, differences: tuple[str, ...]
) -> RebuildResult:
    conn.execute("BEGIN")
    try:
        return RebuildResult(count, position, row_counts(conn), table_digests(conn), differences)
    finally:
        conn.execute("COMMIT")


def ensure_current(path: Path, announce: Callable[[str], None] | None = None) -> None:
    """Make the store's projections match this version of the code: create them for a new
    store, rebuild them from the log when they were built by another version."""
    conn = open_store(path)
    try:
        if is_current(conn):
            return
        events = log_position(conn)
        if events == 0:
            with transaction(conn):
                create_fresh(conn)
            return
    finally:
        conn.close()
    if announce is not None:
        announce("projections were built by another version: rebuilding them from the log")
    rebuild(path)
