"""Writing claims and timeline rows: the ordering rule of CONTRACT §6 as one SQL upsert.

The upsert keeps, per entity, the row of the claim with the greatest key
``(full, version_ms, version_rank, event_id)``, ORs ``deleted`` and keeps the earliest
``deleted_at``. SQLite evaluates every ``SET`` expression on the old row, so the ``CASE`` below
compares the incoming claim with the stored one exactly as :attr:`projections.fold.Claim.key`
orders them. Used by the projector for each batch, and by a rebuild for its winners.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from eventstore.engine import sqlite3
from projections.entities import COMMON_COLUMNS, SPECS, EntitySpec
from projections.fold import (
    EntityRow,
    LoggedEvent,
    TimelineRow,
    claim,
    entity_row,
    timeline_row,
    version_row,
)
from projections.history import derive_added, insert_versions
from projections.schema import TIMELINE, TIMELINE_COLUMNS
from projections.search import index_rows

SUMMARY = TIMELINE_COLUMNS.index("summary")

BY_TABLE = {spec.table: spec for spec in SPECS}
_REPLACED = ("created_at", "updated_at", "data", "event_id", "version_ms", "version_rank")


@cache
def upsert_sql(spec: EntitySpec) -> str:
    """The upsert of one entity row of ``spec``."""
    name = spec.table
    columns = ("id", *spec.column_names, *COMMON_COLUMNS)
    newer = (
        f"(excluded.version_ms, excluded.version_rank, excluded.event_id) > "
        f"({name}.version_ms, {name}.version_rank, {name}.event_id)"
    )
    wins = (
        f"CASE WHEN (excluded.data IS NULL) = ({name}.data IS NULL) THEN {newer} "
        f"ELSE excluded.data IS NOT NULL END"
    )
    replaced = [f"{c} = iif({wins}, excluded.{c}, {name}.{c})"
                for c in (*spec.column_names, *_REPLACED)]  # fmt: skip
    merged = [
        f"deleted = max({name}.deleted, excluded.deleted)",
        f"deleted_at = coalesce(min({name}.deleted_at, excluded.deleted_at), "
        f"{name}.deleted_at, excluded.deleted_at)",
    ]
    return (
        f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT (id) DO UPDATE SET {', '.join(replaced + merged)}"
    )


_STAGED = "temp.timeline_batch"
_STAGE = (
    f"CREATE TABLE IF NOT EXISTS {_STAGED} ({', '.join(TIMELINE_COLUMNS)})",
    f"INSERT INTO {_STAGED} VALUES ({', '.join('?' * len(TIMELINE_COLUMNS))})",
)
_INSERT_TIMELINE = (
    f"INSERT INTO {TIMELINE} ({', '.join(TIMELINE_COLUMNS)}) "
    f"SELECT * FROM {_STAGED} ORDER BY position"
)


def upsert_rows(conn: sqlite3.Connection, spec: EntitySpec, rows: Iterable[EntityRow]) -> None:
    conn.executemany(upsert_sql(spec), rows)


def insert_timeline(conn: sqlite3.Connection, rows: Iterable[TimelineRow]) -> None:
    """Insert ``rows`` in one statement, from a staging table, and index them: inserted one by
    one, each row was a statement of its own, and the full-text index wrote a segment per
    statement."""
    create, stage = _STAGE
    conn.execute(create)
    conn.executemany(stage, rows)
    conn.execute(_INSERT_TIMELINE)
    index_rows(conn, _STAGED)
    conn.execute(f"DELETE FROM {_STAGED}")


def apply_events(conn: sqlite3.Connection, events: Iterable[LoggedEvent]) -> None:
    """Project ``events`` (read once): their timeline rows and their claims, one statement
    per table for them all. Two claims on one entity are upserted one after the other."""
    timeline: list[TimelineRow] = []
    rows: dict[str, list[EntityRow]] = {}  # by table: hashing a spec hashes all its columns
    versions = []
    for event in events:
        timeline.append(line := timeline_row(event))
        found = claim(event)
        if found is not None:
            rows.setdefault(found.spec.table, []).append(entity_row(found, event))
            if (version := version_row(found, event, line[SUMMARY])) is not None:
                versions.append(version)
    if finals := derive_added(conn, versions):
        timeline = [_with_summary(line, finals) for line in timeline]
    insert_timeline(conn, timeline)
    for table, entity_rows in rows.items():
        upsert_rows(conn, BY_TABLE[table], entity_rows)
    insert_versions(conn, versions)


def _with_summary(line: TimelineRow, finals: dict[str, str]) -> TimelineRow:
    """``line`` with its event's final sentence (``projections.history``), if it has one."""
    final = finals.get(line[1])
    return line if final is None else (*line[:SUMMARY], final, *line[SUMMARY + 1 :])
