"""Counting what a store holds (``clerk-audit stats``): the log, and how far its projections
have followed it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from eventstore.db import open_reader
from eventstore.schema import OUTCOMES


@dataclass(frozen=True, slots=True)
class LogStats:
    events: int
    quarantined: int
    position: int
    deliveries: dict[str, int]
    """Deliveries by outcome (every outcome, zero included)."""


def log_stats(conn: sqlite3.Connection) -> LogStats:
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
    finally:
        conn.execute("COMMIT")
    return LogStats(events, quarantined, position, by_outcome)


def read_log_stats(path: Path) -> LogStats:
    with closing(open_reader(path)) as conn:
        return log_stats(conn)
