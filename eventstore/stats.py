"""Counting what a store holds (``clerk-audit stats``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from eventstore.schema import OUTCOMES


@dataclass(frozen=True, slots=True)
class StoreStats:
    events: int
    quarantined: int
    position: int
    deliveries: dict[str, int]
    """Deliveries by outcome (every outcome, zero included)."""
    tables: dict[str, int]
    """Rows of every other table (the projections)."""


def _other_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT IN ('events', 'deliveries') "
        "ORDER BY name"
    ).fetchall()
    return [name for (name,) in rows]


def store_stats(conn: sqlite3.Connection) -> StoreStats:
    """Counts read in one transaction, so they agree with each other."""
    conn.execute("BEGIN")
    try:
        events, quarantined, position = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'quarantined'), "
            "coalesce(max(position), 0) FROM events"
        ).fetchone()
        by_outcome = dict.fromkeys(OUTCOMES, 0)
        by_outcome.update(
            conn.execute("SELECT outcome, count(*) FROM deliveries GROUP BY outcome").fetchall()
        )
        tables = {t: conn.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0]
                  for t in _other_tables(conn)}  # fmt: skip
    finally:
        conn.execute("COMMIT")
    return StoreStats(events, quarantined, position, by_outcome, tables)
