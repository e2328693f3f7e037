"""The log's two backends behind one seam: the writer of the server, and the check made
before serving (``eventstore.location`` says which backend a ``--db`` value names)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, TypeVar

from eventstore.location import LogLocation, PostgresLog
from eventstore.sql import Sql
from eventstore.writer import Job, Settle

T = TypeVar("T")


class LogWriter(Protocol):
    """A group-commit writer in this process (``GroupCommitWriter`` for SQLite,
    ``PgGroupCommitWriter`` for PostgreSQL); the server runs one in a process of its own
    (``eventstore.writer_process``)."""

    async def submit(self, job: Job[T]) -> T: ...

    def enqueue(self, job: Job[Any], handle: Any) -> None: ...

    def enqueue_all(self, jobs: list[tuple[Job[Any], Any]]) -> None: ...

    def close(self) -> None: ...


def open_writer(
    location: LogLocation,
    *,
    busy_timeout_ms: int,
    on_commit: Callable[[], None] | None = None,
    settle: Settle | None = None,
) -> LogWriter:
    """The group-commit writer of the log at ``location`` (``settle``: see the writers)."""
    if isinstance(location, PostgresLog):
        from eventstore.pg.writer import PgGroupCommitWriter

        return PgGroupCommitWriter(
            location, busy_timeout_ms=busy_timeout_ms, on_commit=on_commit, settle=settle
        )
    from eventstore.writer import GroupCommitWriter

    return GroupCommitWriter(
        location, busy_timeout_ms=busy_timeout_ms, on_commit=on_commit, settle=settle
    )


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


def open_log(location: LogLocation, busy_timeout_ms: int = 5000, *, create: bool = True) -> Sql:
    """A write connection to the log (migrated; with ``create``, a SQLite file is created if
    missing), for the commands that write outside the server (``import``, ``verify``'s
    record)."""
    if isinstance(location, PostgresLog):
        from eventstore.pg.connect import connect, prepare
        from eventstore.pg.sql import PgSql

        prepare(location, busy_timeout_ms)
        return PgSql(connect(location, busy_timeout_ms), location)
    from eventstore.db import open_store

    return open_store(location, create=create)


def log_transaction(conn: Sql, location: LogLocation) -> AbstractContextManager[None]:
    """A write transaction on ``conn`` (from :func:`open_log`): SQLite's ``BEGIN IMMEDIATE``,
    or PostgreSQL's with the append lock; committed at the end, rolled back on error."""
    from eventstore.engine import sqlite3

    if isinstance(conn, sqlite3.Connection):
        from eventstore.db import transaction

        return transaction(conn, str(location))
    from eventstore.pg.sql import PgSql
    from eventstore.pg.sql import transaction as pg_transaction

    assert isinstance(conn, PgSql)
    return pg_transaction(conn)


def bulk_appends(conn: Sql, location: LogLocation) -> AbstractContextManager[None]:
    """Settings for appending many events at once on ``conn`` (``import``): SQLite's
    :func:`eventstore.db.bulk_appends`; nothing for PostgreSQL."""
    from eventstore.engine import sqlite3

    if isinstance(conn, sqlite3.Connection) and not isinstance(location, PostgresLog):
        from eventstore.db import bulk_appends as sqlite_bulk_appends

        return sqlite_bulk_appends(conn, location)
    return nullcontext()
