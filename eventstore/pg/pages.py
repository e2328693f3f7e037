"""Rows of the PostgreSQL log in the feed's shape (``eventstore.feed.Row``), for the feed,
``tail`` and ``export``: the columns' JSON object is written here as SQLite's ``json_object``
writes it (compact, the columns in table order), so they give the same bytes from either
log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from eventstore.feed import COLUMNS, Row
from eventstore.sql import Sql

_SELECT = f"SELECT {', '.join(COLUMNS)}, status, body FROM events"
_WIDTH = len(COLUMNS)


def rows(sql: Sql, clause: str, params: Sequence[Any]) -> list[Row]:
    """The events of ``SELECT ... FROM events <clause>`` (the feed's clauses: standard SQL)."""
    found = sql.execute(f"{_SELECT} {clause}", params).fetchall()
    return [
        (row[0], orjson.dumps(dict(zip(COLUMNS, row[:_WIDTH], strict=True))), row[-2], row[-1])
        for row in found
    ]
