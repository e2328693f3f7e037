"""Reading a store the way an outside tool would: plain ``sqlite3`` (or ``psycopg`` for a
PostgreSQL log), never our own code."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from eventstore.engine import sqlite3
from eventstore.location import LogLocation, PostgresLog
from eventstore.paths import default_projections_path

PROJECTIONS_OF: dict[str, Path] = {}
"""The projections file of each PostgreSQL log a test server runs on (by URL)."""


def query(db_path: LogLocation, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts, read through a connection of its own (closed after)."""
    if isinstance(db_path, PostgresLog):
        with psycopg.connect(db_path.url, autocommit=True, row_factory=dict_row) as pg:
            text = sql.replace("%", "%%").replace("?", "%s")
            return pg.execute(text.encode(), params or None, binary=True).fetchall()
    with closing(sqlite3.connect(db_path, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params).fetchall()]


def projections_of(db_path: LogLocation) -> Path:
    """The projections file of the log at ``db_path`` (beside a SQLite log)."""
    if isinstance(db_path, PostgresLog):
        return PROJECTIONS_OF[db_path.url]
    return default_projections_path(db_path)


def query_projections(
    db_path: LogLocation, sql: str, params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    """The rows of ``sql`` on the projections of the log at ``db_path``."""
    return query(projections_of(db_path), sql, params)


def deliveries_by_agent(db_path: LogLocation, user_agent: str) -> list[dict[str, Any]]:
    """The ``deliveries`` rows of requests sent with ``user_agent`` (tests tag each request)."""
    return query(
        db_path, "SELECT * FROM deliveries WHERE user_agent = ? ORDER BY id", (user_agent,)
    )


def events_by_id(db_path: LogLocation, event_id: str) -> list[dict[str, Any]]:
    return query(db_path, "SELECT * FROM events WHERE event_id = ?", (event_id,))


def table_columns(db_path: LogLocation, table: str) -> list[str]:
    if isinstance(db_path, PostgresLog):
        sql = ("SELECT column_name AS name FROM information_schema.columns "
               "WHERE table_name = ? ORDER BY ordinal_position")  # fmt: skip
        return [row["name"] for row in query(db_path, sql, (table,))]
    return [row["name"] for row in query(db_path, f"PRAGMA table_info([{table}])")]


def dump(path: Path) -> str:
    """The file at ``path`` as text: every schema entry and every row of every stored table,
    in a fixed order (``pysqlite3`` has no ``iterdump``)."""
    with closing(sqlite3.connect(path)) as conn:
        schema = conn.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        lines = [repr(entry) for entry in schema]
        for kind, name, sql in schema:
            if kind == "table" and not str(sql).startswith("CREATE VIRTUAL TABLE"):
                rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()
                lines += [f"{name}: {row!r}" for row in sorted(rows, key=repr)]
    return "\n".join(lines)
