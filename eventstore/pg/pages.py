"""Pages of the PostgreSQL log in the feed's row shape (``eventstore.feed.Row``), for
``export``: the columns' JSON object is written here, as SQLite's ``json_object`` writes it
(compact, the columns in table order), so an export is the same bytes from either log."""

from __future__ import annotations

import orjson

from eventstore.errors import ConfigurationError
from eventstore.feed import COLUMNS, Row
from eventstore.sql import Sql

_SELECT = (f"SELECT {', '.join(COLUMNS)}, status, body FROM events "
           "WHERE position > ? ORDER BY position LIMIT ?")  # fmt: skip
_WIDTH = len(COLUMNS)


def read_page(sql: Sql, after: int, limit: int, filtered: bool) -> list[Row]:
    """Up to ``limit`` events after position ``after``, in position order.

    :raises ConfigurationError: filters were asked for (the feed's filtered reads are
        SQLite's for now).
    """
    if filtered:
        raise ConfigurationError("filtered reads of a PostgreSQL log are not supported yet")
    rows = sql.execute(_SELECT, (after, limit)).fetchall()
    return [
        (row[0], orjson.dumps(dict(zip(COLUMNS, row[:_WIDTH], strict=True))), row[-2], row[-1])
        for row in rows
    ]
