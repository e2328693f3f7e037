"""A psycopg connection that takes the SQL of ``eventstore.log`` as it is (``?``
placeholders) and raises our errors, so both logs share one implementation of the append, the
chain and the reads (``eventstore.sql.Sql``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus

if TYPE_CHECKING:
    from eventstore.location import PostgresLog

IDLE = TransactionStatus.IDLE


@lru_cache(maxsize=256)
def placeholders(sql: str) -> str:
    """``?`` -> ``$1``, ``$2``, ...: PostgreSQL's own placeholders, which psycopg's raw cursors
    send as they are. Its ``%s`` queries are parsed in Python, and that parse is cached only
    for texts under 4 KB, so a group's multi-row insert was parsed again for every group
    (0.7 ms a statement). The log's statements hold no ``?`` inside string literals."""
    parts = sql.split("?")
    numbered = (f"{part}${number}" for number, part in enumerate(parts[:-1], 1))
    return "".join(numbered) + parts[-1]


class PgSql:
    """One psycopg connection seen as :class:`eventstore.sql.Sql`. Results come in binary
    (bodies as bytes, without hex text in between)."""

    def __init__(self, conn: psycopg.Connection[Any], where: PostgresLog | str) -> None:
        self.conn = conn
        self._where = where

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        try:
            cursor = psycopg.RawCursor(self.conn)
            return cursor.execute(placeholders(sql), tuple(parameters) or None, binary=True)
        except psycopg.Error as error:
            raise self._translated(error) from error

    def execute_streamed(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        """Like :meth:`execute`, with the rows read from the server a batch at a time (a
        server-side cursor, in the caller's transaction if there is one) instead of all at once: for
        reads of the whole log (``eventstore.log.chain_rows``)."""
        idle = self.conn.info.transaction_status == IDLE  # no transaction: a holdable cursor
        name = f"clerk_audit_{id(self):x}"
        cursor = psycopg.RawServerCursor(self.conn, name, withhold=idle)
        try:
            return cursor.execute(placeholders(sql), tuple(parameters) or None, binary=True)
        except psycopg.Error as error:
            raise self._translated(error) from error

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        rows = [tuple(row) for row in parameters]
        if not rows:
            return
        try:
            with psycopg.RawCursor(self.conn) as cursor:
                cursor.executemany(placeholders(sql), rows)
        except psycopg.Error as error:
            raise self._translated(error) from error

    def close(self) -> None:
        self.conn.close()

    def _translated(self, error: psycopg.Error) -> Exception:
        from eventstore.pg.connect import translate

        return translate(error, self._where)


@contextmanager
def transaction(sql: PgSql) -> Iterator[None]:
    """``BEGIN`` and the append lock (``eventstore.pg.writer``) ... ``COMMIT``; rolled back
    whole on any error. For the writers that are not the server's (``import``)."""
    sql.execute("BEGIN")
    try:
        sql.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        yield
        sql.execute("COMMIT")
    except BaseException:
        if not sql.conn.closed and sql.conn.info.transaction_status != IDLE:
            with suppress(psycopg.Error):
                sql.conn.execute("ROLLBACK")
        raise
