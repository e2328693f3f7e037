"""The state digest: SHA-256 over every projection table's rows in primary-key order.

Each table's rows are encoded canonically (a JSON array per row, in column order) and hashed;
``audit_timeline`` is taken in ``event_id`` order without ``position``, the only value that
depends on arrival (CONTRACT §6). The state digest hashes the table names with their digests, so
equal sets of events give equal digests whatever order and duplicates they arrived in.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping

import orjson

from projections.schema import PROJECTION_TABLES, TIMELINE, TIMELINE_COLUMNS

BATCH = 10_000


def _select(table: str, name: str) -> str:
    if table == TIMELINE:
        return f"SELECT {', '.join(TIMELINE_COLUMNS[1:])} FROM {name} ORDER BY event_id"
    return f"SELECT * FROM {name} ORDER BY id"


def table_digest(conn: sqlite3.Connection, table: str, name: str | None = None) -> str:
    """The digest of one projection ``table`` (stored under ``name``, a shadow's, if given)."""
    sha = hashlib.sha256()
    cursor = conn.execute(_select(table, name or table))
    while rows := cursor.fetchmany(BATCH):
        for row in rows:
            sha.update(orjson.dumps(row))
            sha.update(b"\n")
    return sha.hexdigest()


def table_digests(
    conn: sqlite3.Connection, names: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``{table: digest}`` for every projection table."""
    return {t: table_digest(conn, t, names[t] if names else None) for t in PROJECTION_TABLES}


def state_digest(digests: Mapping[str, str]) -> str:
    """The digest of the whole state from its per-table digests."""
    sha = hashlib.sha256()
    for table in PROJECTION_TABLES:
        sha.update(f"{table}:{digests[table]}\n".encode())
    return sha.hexdigest()
