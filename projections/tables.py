"""Creating, swapping and describing the projection tables of a store.

``_projection_meta`` records the schema fingerprint the tables were built with and the index
generation (see ``projections.schema.index_ddl``). Functions here run inside the caller's
transaction, except :func:`drop_paced`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from projections.pacing import Pacer
from projections.schema import (
    INDEXES,
    META,
    PROJECTION_TABLES,
    VIEWS,
    fingerprint,
    index_ddl,
    table_ddl,
    view_ddl,
)

SHADOW_PREFIX = "_rebuild_"
RETIRING = "_rebuild_retiring"
"""A live table's name for a moment during :func:`swap_in`."""
LIVE_NAMES: Mapping[str, str] = {table: table for table in PROJECTION_TABLES}
SHADOW_NAMES: Mapping[str, str] = {t: SHADOW_PREFIX + t for t in PROJECTION_TABLES}


def _create_meta(conn: sqlite3.Connection) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT)")


def _exists(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    """The bookkeeping values (empty for a store without projections yet)."""
    if not _exists(conn, META):
        return {}
    return dict(conn.execute(f"SELECT key, value FROM {META}").fetchall())


def write_meta(conn: sqlite3.Connection, **values: str | int | None) -> None:
    _create_meta(conn)
    for key, value in values.items():
        if value is None:
            conn.execute(f"DELETE FROM {META} WHERE key = ?", (key,))
        else:
            conn.execute(f"INSERT OR REPLACE INTO {META} VALUES (?, ?)", (key, str(value)))


def is_current(conn: sqlite3.Connection) -> bool:
    """Whether the projection tables were built by this version of the code."""
    return read_meta(conn).get("fingerprint") == fingerprint()


def generation(conn: sqlite3.Connection) -> int:
    return int(read_meta(conn).get("generation", "0"))


def drop_tables(conn: sqlite3.Connection, names: Mapping[str, str]) -> None:
    for name in names.values():
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def _indexes(conn: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    """``(index, its first column)`` for each index made by a ``CREATE INDEX`` on ``table``."""
    names = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
        (table,),
    ).fetchall()
    return [(name, conn.execute(f"PRAGMA index_info({name})").fetchone()[2]) for (name,) in names]


def _read_every_page(conn: sqlite3.Connection, table: str, indexes: list[tuple[str, str]]) -> None:
    """Read each page of ``table`` and its ``indexes`` (a read transaction: writers go on)."""
    last = conn.execute(f"PRAGMA table_info({table})").fetchall()[-1][1]
    conn.execute(f"SELECT sum(length(CAST({last} AS BLOB))) FROM {table}").fetchone()
    for index, column in indexes:
        conn.execute(f"SELECT count({column}) FROM {table} INDEXED BY {index}").fetchone()


def _drop_one(pacer: Pacer, table: str) -> None:
    indexes = _indexes(pacer.conn, table)
    _read_every_page(pacer.conn, table, indexes)
    for index, _ in indexes:
        with pacer.transaction() as conn:
            conn.execute(f"DROP INDEX {index}")
    with pacer.transaction() as conn:
        conn.execute(f"DROP TABLE {table}")


def drop_paced(pacer: Pacer, names: Mapping[str, str]) -> None:
    """Drop the tables ``names`` (if they exist) and their indexes, each in a paced transaction
    of its own (``projections.pacing``), not in the caller's.

    A ``DROP`` reads every page of what it drops under the write lock. Old tables are seldom in
    the OS's cache, and read there, a million-row table held the server's writer out for several
    seconds, so each table is read first, outside any write transaction. Measured on the
    million-event bench log: reading the old timeline took 1.5 s, its ``DROP`` then 0.15 s;
    deleting the tables a few thousand rows per transaction instead, as before, took about 30 s
    (each batch rewrites its pages through the WAL).
    """
    for name in names.values():
        if _exists(pacer.conn, name):
            _drop_one(pacer, name)


def create_tables(conn: sqlite3.Connection, names: Mapping[str, str]) -> None:
    for table, name in names.items():
        conn.execute(table_ddl(table, name))


def create_indexes(conn: sqlite3.Connection, names: Mapping[str, str], gen: int) -> None:
    for index in INDEXES:
        conn.execute(index_ddl(index, names[index.table], gen))


def drop_views(conn: sqlite3.Connection) -> None:
    for view in VIEWS:
        conn.execute(f"DROP VIEW IF EXISTS {view}")


def create_views(conn: sqlite3.Connection) -> None:
    for view in VIEWS:
        conn.execute(view_ddl(view))


def swap_in(conn: sqlite3.Connection, shadow: Mapping[str, str], gen: int) -> None:
    """Put the ``shadow`` tables (built for generation ``gen``) in place of the live ones, which
    take the shadow names: renames only, so the caller's transaction stays short however large
    the tables are (drop the old ones afterwards with :func:`drop_paced`).

    Needs ``PRAGMA legacy_alter_table = ON`` on ``conn``: the renames must not rewrite or
    re-check the other tables' references while the live tables are gone.
    """
    drop_views(conn)
    for table, name in shadow.items():
        live = _exists(conn, table)
        if live:
            conn.execute(f"ALTER TABLE {table} RENAME TO {RETIRING}")
        conn.execute(f"ALTER TABLE {name} RENAME TO {table}")
        if live:
            conn.execute(f"ALTER TABLE {RETIRING} RENAME TO {name}")
    create_views(conn)
    write_meta(conn, fingerprint=fingerprint(), generation=gen)


def create_fresh(conn: sqlite3.Connection) -> None:
    """Create empty live projections (a store whose log is empty)."""
    gen = generation(conn) + 1
    drop_views(conn)
    drop_tables(conn, LIVE_NAMES)
    create_tables(conn, LIVE_NAMES)
    create_indexes(conn, LIVE_NAMES, gen)
    create_views(conn)
    write_meta(conn, fingerprint=fingerprint(), generation=gen)


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """``{table: rows}`` for every projection table."""
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in PROJECTION_TABLES}
