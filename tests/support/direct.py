"""Appending events to a log and projecting them the way the server does, without HTTP.

For property tests that need hundreds of stores: the writer's ``append_jobs`` in one
transaction, then the projector up to the log's head (HTTP and svix are covered by the server
tests). A store here is a connection to its projections file, the log attached as ``log``.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from eventstore.db import open_store, transaction
from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path
from eventstore.writer import AppendJob, append_jobs
from projections import Projector, state_digest, table_digests
from projections.files import create_empty
from projections.schema import (
    SEARCH_SHARDS,
    SEARCH_TOKENS,
    SEARCHED,
    TIMELINE,
    search_shard,
    shard_of,
)

RECEIVED = "2026-11-23T12:00:00.000Z"


def new_store(path: Path) -> sqlite3.Connection:
    """A created log at ``path`` with empty projections beside it: a connection to the
    projections, with the log attached as ``log``."""
    open_store(path, create=True).close()
    projections = default_projections_path(path)
    create_empty(projections)
    return connect(path)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the current projections of the log at ``path`` (log attached)."""
    conn = sqlite3.connect(default_projections_path(path), isolation_level=None)
    conn.execute("ATTACH DATABASE ? AS log", (str(path),))
    return conn


def _paths(conn: sqlite3.Connection) -> tuple[Path, Path]:
    files = {name: file for _, name, file in conn.execute("PRAGMA database_list")}
    log = Path(files["log"])
    return log, default_projections_path(log)


def project(conn: sqlite3.Connection) -> int:
    """Run the projector up to the log's head; returns how many positions it handled."""
    projector = Projector(*_paths(conn))
    try:
        return projector.run()
    finally:
        projector.close()


def append_all(conn: sqlite3.Connection, events: Iterable[tuple[str, bytes]]) -> None:
    """Append events in order as one group (one transaction and one batch), as the writer
    groups them, then project them."""
    log_path, _ = _paths(conn)
    jobs = [AppendJob(event_id, 1, RECEIVED, body) for event_id, body in events]
    with closing(open_store(log_path)) as log, transaction(log):
        append_jobs(log, jobs)
    project(conn)


def digest(conn: sqlite3.Connection) -> str:
    """The state digest of the projections."""
    return state_digest(table_digests(conn))


def misindexed(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    """What the full-text shards hold that a fresh index of the timeline would not, and the
    other way round (``(term, position, column, offset, shard)``, every word of every row,
    each in the shard of its row): empty when the index is exact."""
    columns = ", ".join(SEARCHED)
    conn.execute(f"CREATE VIRTUAL TABLE temp.fresh USING fts5({columns}, content='', "
                 f"{SEARCH_TOKENS})")  # fmt: skip
    conn.execute(f"INSERT INTO temp.fresh (rowid, {columns}) SELECT position, {columns} "
                 f"FROM {TIMELINE}")  # fmt: skip
    conn.execute("CREATE VIRTUAL TABLE temp.fresh_words USING fts5vocab(temp, fresh, instance)")
    expected = set(conn.execute(
        f"SELECT w.term, w.doc, w.col, w.offset, {shard_of('t.')} FROM temp.fresh_words AS w "
        f"JOIN {TIMELINE} AS t ON t.position = w.doc"))  # fmt: skip
    held: set[tuple[object, ...]] = set()
    for number in range(SEARCH_SHARDS):
        name = search_shard(number)
        conn.execute(f"CREATE VIRTUAL TABLE temp.words USING fts5vocab(main, {name}, instance)")
        held |= {(*row, number) for row in conn.execute("SELECT * FROM temp.words")}
        conn.execute("DROP TABLE temp.words")
    conn.execute("DROP TABLE temp.fresh_words")
    conn.execute("DROP TABLE temp.fresh")
    return sorted(expected ^ held, key=repr)
