"""What the log's SQL needs of a connection, for both backends: ``sqlite3.Connection``, and
``eventstore.pg.sql.PgSql`` around a psycopg connection (which takes the same ``?``
placeholders). Functions in ``eventstore.log`` take this, so one implementation of the append,
the chain and the reads serves both logs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class Rows(Protocol):
    """A cursor's results."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ..., /) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class Sql(Protocol):
    """A connection running plain SQL with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Rows: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def close(self) -> None: ...
