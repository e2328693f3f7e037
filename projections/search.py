"""Adding timeline rows to the full-text index, a batch at a time.

The index is ``SEARCH_SHARDS`` FTS5 tables behind the view ``audit_timeline_fts``
(``projections.schema``). New rows reach their shards a batch at a time
(:func:`index_rows`): each row's shard is worked out once, then each shard takes its rows in
one statement, so that FTS5 writes one segment per shard and batch. Deleted and updated rows
are kept in step by the schema's triggers. A redaction rewrites only the shards that held
its rows (``projections.redactions``).
"""

from __future__ import annotations

from eventstore.engine import sqlite3
from projections.schema import SEARCH_SHARDS, SEARCHED, search_shard, shard_of

_ROUTED = "temp.search_batch"
_COLUMNS = ", ".join(SEARCHED)
_ROUTE = (
    f"CREATE TABLE IF NOT EXISTS {_ROUTED} (shard INTEGER, position INTEGER, {_COLUMNS})",
    f"CREATE INDEX IF NOT EXISTS {_ROUTED}_shard ON search_batch (shard, position)",
)


def index_rows(conn: sqlite3.Connection, source: str) -> None:
    """Add every row of ``source`` (the timeline, or a table with its columns whose rows were
    just inserted into it) to its shard, inside the caller's transaction."""
    for statement in _ROUTE:
        conn.execute(statement)
    conn.execute(f"INSERT INTO {_ROUTED} SELECT {shard_of()}, position, {_COLUMNS} FROM {source}")
    for number in range(SEARCH_SHARDS):
        conn.execute(
            f"INSERT INTO {search_shard(number)} (rowid, {_COLUMNS}) "
            f"SELECT position, {_COLUMNS} FROM {_ROUTED} WHERE shard = ? ORDER BY position",
            (number,),
        )
    conn.execute(f"DELETE FROM {_ROUTED}")
