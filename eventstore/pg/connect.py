"""Connecting to the PostgreSQL log, its connection settings, and the one place psycopg's
errors become ours.

Every connection is in autocommit mode (transactions are explicit, as with SQLite) and bounded
in time, so that a database that is stopped, restarted or out of reach is answered with a 503
within the busy timeout, never waited for: ``connect_timeout`` for a new connection,
``lock_timeout`` and ``statement_timeout`` on the server, ``tcp_user_timeout`` for a peer that
went silent. ``synchronous_commit`` is on whatever the server's default: a 2xx only follows a
commit that reached the database's disk.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from eventstore.errors import StoreError, StoreUnavailable
from eventstore.location import PostgresLog
from eventstore.pg.sql import PgSql

POOL_SIZE = 4
"""Connections per process at most: the writer's and the few readers' (``/healthz`` goes
through the writer). A database serves many ingest processes, each with this bound."""
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58", "40", "55P03", "25006", "XX")
"""SQLSTATE classes (and codes) that mean the database cannot commit now: connection lost
(08), out of resources or disk (53), shut down or timed out (57), I/O (58), serialisation or
deadlock (40), lock timeout (55P03), read-only (25006), internal (XX)."""


def connection_kwargs(busy_timeout_ms: int) -> dict[str, Any]:
    """libpq parameters bounding every wait by ``busy_timeout_ms``."""
    seconds = max(2, -(-busy_timeout_ms // 1000))  # libpq's connect_timeout: whole s, >= 2
    options = (
        f"-c lock_timeout={busy_timeout_ms} -c statement_timeout={busy_timeout_ms} "
        "-c synchronous_commit=on -c idle_in_transaction_session_timeout=60000"
    )
    return {
        "autocommit": True,
        "connect_timeout": seconds,
        "tcp_user_timeout": busy_timeout_ms,
        "keepalives_idle": 5,
        "options": options,
        "application_name": "clerk-audit",
    }


def translate(error: psycopg.Error | PoolTimeout, where: PostgresLog | str) -> StoreError:
    """Our error for a psycopg one: the database unreachable, overloaded, locked too long or
    read-only is :class:`StoreUnavailable` (retry later); a statement it refused (a constraint,
    an append-only trigger) is a plain :class:`StoreError`."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    state = getattr(error, "sqlstate", None) or ""
    lost = isinstance(error, PoolTimeout | psycopg.OperationalError | psycopg.InterfaceError)
    if state.startswith(_UNAVAILABLE_CLASSES) or (lost and not state):
        return StoreUnavailable(
            f"the PostgreSQL log {where} cannot commit now ({text})",
            public="the store cannot commit now",
        )
    return StoreError(f"the PostgreSQL log {where} refused a statement ({text})",
                      public="the store refused the write")  # fmt: skip


def connect(location: PostgresLog, busy_timeout_ms: int) -> psycopg.Connection[Any]:
    """One connection (autocommit, bounded).

    :raises StoreUnavailable: the database cannot be reached now.
    """
    try:
        return psycopg.connect(location.url, **connection_kwargs(busy_timeout_ms))
    except psycopg.Error as error:
        raise translate(error, location) from error


def open_pool(location: PostgresLog, busy_timeout_ms: int, size: int = POOL_SIZE) -> ConnectionPool:
    """A bounded pool (1 to ``size`` connections) that checks a connection before handing it
    out, so one that a database restart cut off is replaced instead of failing a request. It
    opens without waiting: an unreachable database fails the first request (503), not the
    start."""
    return ConnectionPool(
        location.url,
        min_size=1,
        max_size=size,
        kwargs=connection_kwargs(busy_timeout_ms),
        timeout=busy_timeout_ms / 1000,
        reconnect_timeout=3600,
        check=ConnectionPool.check_connection,
        name="clerk-audit-log",
        open=True,
    )


def open_reader(location: PostgresLog, busy_timeout_ms: int = 5000) -> PgSql:
    """The projector's view of the log: one autocommit connection, read-only."""
    conn = connect(location, busy_timeout_ms)
    try:
        conn.execute("SET default_transaction_read_only = on")
    except psycopg.Error as error:
        conn.close()
        raise translate(error, location) from error
    return PgSql(conn, location)


def prepare(location: PostgresLog, busy_timeout_ms: int = 5000) -> None:
    """Migrate the log (creating its tables on an empty database) and check that it can be
    written, before serving anything.

    :raises StoreUnavailable: the database cannot be reached, or is read-only (a replica).
    """
    from eventstore.pg.schema import migrate

    sql = PgSql(connect(location, busy_timeout_ms), location)
    try:
        migrate(sql)
        if sql.execute("SHOW transaction_read_only").fetchone() == ("on",):
            raise StoreUnavailable(f"the PostgreSQL log {location} is read-only (a replica?)",
                                   public="the store is read-only")  # fmt: skip
    finally:
        sql.close()
