"""Reading a store the way an outside tool would: plain ``sqlite3``, never our own code."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from eventstore.paths import default_projections_path


def query(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts, read through a connection of its own (closed after)."""
    with closing(sqlite3.connect(db_path, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params).fetchall()]


def query_projections(
    db_path: Path, sql: str, params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    """The rows of ``sql`` on the projections of the log at ``db_path``."""
    return query(default_projections_path(db_path), sql, params)


def deliveries_by_agent(db_path: Path, user_agent: str) -> list[dict[str, Any]]:
    """The ``deliveries`` rows of requests sent with ``user_agent`` (tests tag each request)."""
    return query(
        db_path, "SELECT * FROM deliveries WHERE user_agent = ? ORDER BY id", (user_agent,)
    )


def events_by_id(db_path: Path, event_id: str) -> list[dict[str, Any]]:
    return query(db_path, "SELECT * FROM events WHERE event_id = ?", (event_id,))


def table_columns(db_path: Path, table: str) -> list[str]:
    return [row["name"] for row in query(db_path, f"PRAGMA table_info([{table}])")]
