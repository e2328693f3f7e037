"""Counting what a store holds (``clerk-audit stats``): the log, and how far its projections
have followed it."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass

from eventstore.engine import sqlite3
from eventstore.location import LogLocation, open_log_reader
from eventstore.schema import OUTCOMES
from eventstore.sql import Sql


@dataclass(frozen=True, slots=True)
class LogStats:
    events: int
    quarantined: int
    position: int
    deliveries: dict[str, int]
    """Deliveries by outcome (every outcome, zero included)."""


def log_stats(conn: Sql) -> LogStats:
    """Counts read in one transaction, so they agree with each other (PostgreSQL: in one
    snapshot, which its default isolation gives a statement, not a transaction)."""
    sqlite = isinstance(conn, sqlite3.Connection)
    conn.execute("BEGIN" if sqlite else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
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


def read_log_stats(location: LogLocation) -> LogStats:
    with closing(open_log_reader(location)) as conn:
        return log_stats(conn)
