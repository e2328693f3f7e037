"""Adding timeline rows to the full-text index a batch at a time, and forgetting old words.

The index is ``SEARCH_SHARDS`` FTS5 tables behind the view ``audit_timeline_fts``
(``projections.schema``). New rows reach their shards a batch at a time
(:func:`index_rows`): each row's shard is worked out once, then each shard takes its rows in
one statement, so that FTS5 writes one segment per shard and batch. Deleted and updated rows
are kept in step by the schema's triggers. When a redaction replaces rows, their old words
must leave the files, not only the index's lookups (:func:`forgetting`): FTS5's
``secure-delete`` does that in place where SQLite has it (3.42 and later, ``eventstore.engine``);
before, only a merge of every segment that held them does, so the shards that held the rows
are merged whole, a sixteenth of the index each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from eventstore.engine import FTS5_SECURE_DELETE, sqlite3
from eventstore.redaction import in_chunks
from projections.schema import SEARCH_SHARDS, SEARCHED, TIMELINE, search_shard, shard_of

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


@contextmanager
def forgetting(conn: sqlite3.Connection, positions: Sequence[int]) -> Iterator[None]:
    """Around replacing the timeline rows at ``positions`` (in the caller's transaction, with
    ``PRAGMA secure_delete`` on): their old words leave the index's pages for good."""
    shards = _holding(conn, positions)
    if FTS5_SECURE_DELETE:  # the old words leave the pages with their rows
        for shard in shards:
            conn.execute(f"INSERT INTO {shard} ({shard}, rank) VALUES ('secure-delete', 1)")
    yield
    if not FTS5_SECURE_DELETE:  # merged into one segment, a shard keeps no deleted word
        for shard in shards | _holding(conn, positions):
            conn.execute(f"INSERT INTO {shard} ({shard}) VALUES ('optimize')")


def _holding(conn: sqlite3.Connection, positions: Sequence[int]) -> set[str]:
    """The shards that hold the timeline rows at ``positions``."""
    found: set[str] = set()
    for part in in_chunks(positions):
        query = (f"SELECT DISTINCT {shard_of()} FROM {TIMELINE} "
                 f"WHERE position IN ({', '.join('?' * len(part))})")  # fmt: skip
        found.update(search_shard(number) for (number,) in conn.execute(query, part))
    return found
