"""Writing claims and timeline rows: the ordering rule of CONTRACT §6 as one SQL upsert.

The upsert keeps, per entity, the row of the claim with the greatest key
``(full, version_ms, version_rank, event_id)``, ORs ``deleted`` and keeps the earliest
``deleted_at``. SQLite evaluates every ``SET`` expression on the old row, so the ``CASE`` below
compares the incoming claim with the stored one exactly as :attr:`projections.fold.Claim.key`
orders them. Used live (a group's new events per call) and by the rebuild's catch-up.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from functools import cache

from eventstore.records import StoredEvent
from projections.entities import COMMON_COLUMNS, EntitySpec
from projections.fold import (
    EntityRow,
    LoggedEvent,
    TimelineRow,
    claim,
    entity_row,
    logged_event,
    parse_logged,
    timeline_row,
)
from projections.schema import TIMELINE, TIMELINE_COLUMNS

_REPLACED = ("created_at", "updated_at", "data", "event_id", "version_ms", "version_rank")


@cache
def upsert_sql(spec: EntitySpec, name: str) -> str:
    """The upsert of one entity row of ``spec`` into the table called ``name``."""
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


@cache
def timeline_insert_sql(name: str) -> str:
    placeholders = ", ".join("?" * len(TIMELINE_COLUMNS))
    return f"INSERT INTO {name} ({', '.join(TIMELINE_COLUMNS)}) VALUES ({placeholders})"


def upsert_rows(
    conn: sqlite3.Connection, spec: EntitySpec, rows: Iterable[EntityRow], name: str
) -> None:
    conn.executemany(upsert_sql(spec, name), rows)


def insert_timeline(conn: sqlite3.Connection, rows: Iterable[TimelineRow], name: str) -> None:
    conn.executemany(timeline_insert_sql(name), rows)


def apply_events(
    conn: sqlite3.Connection, events: Sequence[LoggedEvent], names: Mapping[str, str] | None = None
) -> None:
    """Project ``events``: their timeline rows and their claims, one statement per table for
    them all (``names`` maps a projection table to the table actually written, for a rebuild's
    shadow tables). Two claims on one entity are upserted one after the other."""
    insert_timeline(conn, map(timeline_row, events), names[TIMELINE] if names else TIMELINE)
    rows: dict[EntitySpec, list[EntityRow]] = {}
    for event in events:
        found = claim(event)
        if found is not None:
            rows.setdefault(found.spec, []).append(entity_row(found, event))
    for spec, entity_rows in rows.items():
        upsert_rows(conn, spec, entity_rows, names[spec.table] if names else spec.table)


def _logged(stored: StoredEvent) -> LoggedEvent | None:
    record = stored.record
    if record.document is not None:
        return logged_event(stored.position, record.event_id, record.document)
    return parse_logged(stored.position, record.event_id, record.body)


def project(conn: sqlite3.Connection, stored: Sequence[StoredEvent]) -> None:
    """The live projector: called by the writer in the transaction that appends ``stored``
    (a group's new events, in log order)."""
    apply_events(conn, [event for event in map(_logged, stored) if event is not None])
