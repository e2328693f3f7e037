"""The state digest: SHA-256 over every projection table's rows in primary-key order.

Each table's rows are encoded canonically (a JSON array per row, in column order) and hashed;
``audit_timeline`` is taken in ``event_id`` order without ``position``, the only value that
depends on arrival (CONTRACT §6). The state digest hashes the table names with their digests, so
equal sets of events give equal digests whatever order and duplicates they arrived in.

After a large rebuild the digests are read by two worker processes at once, the timeline by
one and the entity tables by the other (:func:`digests_in_workers`), from the new file before
it is published, so nothing writes it meanwhile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import orjson

from eventstore.engine import sqlite3
from projections.schema import HISTORY_ORDER, PROJECTION_TABLES, TIMELINE, TIMELINE_COLUMNS
from projections.workers import job_connection, worker_pool

BATCH = 10_000


def _select(table: str, name: str) -> str:
    if table == TIMELINE:
        return f"SELECT {', '.join(TIMELINE_COLUMNS[1:])} FROM {name} ORDER BY event_id"
    return f"SELECT * FROM {name} ORDER BY {HISTORY_ORDER.get(table, 'id')}"


def table_digest(conn: sqlite3.Connection, table: str) -> str:
    """The digest of one projection ``table``."""
    sha = hashlib.sha256()
    cursor = conn.execute(_select(table, table))
    while rows := cursor.fetchmany(BATCH):
        for row in rows:
            sha.update(orjson.dumps(row))
            sha.update(b"\n")
    return sha.hexdigest()


def table_digests(conn: sqlite3.Connection) -> dict[str, str]:
    """``{table: digest}`` for every projection table (in the caller's transaction, if any)."""
    return {t: table_digest(conn, t) for t in PROJECTION_TABLES}


def _digest_job(path: str, tables: tuple[str, ...]) -> dict[str, str]:
    """(Run by a worker.) The digests of ``tables``."""
    conn = job_connection(path)
    try:
        return {table: table_digest(conn, table) for table in tables}
    finally:
        conn.close()


def digests_in_workers(path: Path, workers: int) -> dict[str, str]:
    """Every projection table's digest in the file at ``path``, which nothing writes, the
    timeline read by one worker process and the other tables by another (none: here)."""
    jobs = [
        (str(path), (TIMELINE,)),
        (str(path), tuple(t for t in PROJECTION_TABLES if t != TIMELINE)),
    ]
    with worker_pool(min(workers, len(jobs))) as run:
        parts = list(run(_digest_job, jobs))
    digests = {table: digest for part in parts for table, digest in part.items()}
    return {table: digests[table] for table in PROJECTION_TABLES}


def state_digest(digests: Mapping[str, str]) -> str:
    """The digest of the whole state from its per-table digests."""
    sha = hashlib.sha256()
    for table in PROJECTION_TABLES:
        sha.update(f"{table}:{digests[table]}\n".encode())
    return sha.hexdigest()
