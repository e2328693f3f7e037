"""The log's two backends behind one seam: the writer of the server, and the check made
before serving (``eventstore.location`` says which backend a ``--db`` value names)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from eventstore.location import LogLocation, PostgresLog
from eventstore.writer import Job

T = TypeVar("T")


class LogWriter(Protocol):
    """What the ingest route needs of a writer (``GroupCommitWriter`` for SQLite,
    ``PgGroupCommitWriter`` for PostgreSQL)."""

    async def submit(self, job: Job[T]) -> T: ...

    def enqueue(self, job: Job[Any], handle: Any) -> None: ...

    def close(self) -> None: ...


def open_writer(
    location: LogLocation, *, busy_timeout_ms: int, on_commit: Callable[[], None] | None = None
) -> LogWriter:
    """The group-commit writer of the log at ``location``."""
    if isinstance(location, PostgresLog):
        from eventstore.pg.writer import PgGroupCommitWriter

        return PgGroupCommitWriter(location, busy_timeout_ms=busy_timeout_ms, on_commit=on_commit)
    from eventstore.writer import GroupCommitWriter

    return GroupCommitWriter(location, busy_timeout_ms=busy_timeout_ms, on_commit=on_commit)


def prepare_log(location: LogLocation, busy_timeout_ms: int) -> None:
    """Open (or create) the log and prove it can be written, before serving anything."""
    if isinstance(location, PostgresLog):
        from eventstore.pg.connect import prepare

        prepare(location, busy_timeout_ms)
        return
    from eventstore.db import open_store, probe_writable

    conn = open_store(location, create=True)
    try:
        probe_writable(conn, location)
    finally:
        conn.close()
