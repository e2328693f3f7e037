"""Creating, swapping and describing the projection tables of a store.

``_projection_meta`` records the schema fingerprint the tables were built with and the index
generation (see ``projections.schema.index_ddl``). Functions here run inside the caller's
transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

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
LIVE_NAMES: Mapping[str, str] = {table: table for table in PROJECTION_TABLES}
SHADOW_NAMES: Mapping[str, str] = {t: SHADOW_PREFIX + t for t in PROJECTION_TABLES}


def _create_meta(conn: sqlite3.Connection) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT)")


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    """The bookkeeping values (empty for a store without projections yet)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (META,)
    ).fetchone()
    if not exists:
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
    """Replace the live tables by the ``shadow`` ones (built for generation ``gen``).

    Needs ``PRAGMA legacy_alter_table = ON`` on ``conn``: the renames must not rewrite or
    re-check the other tables' references while the live tables are gone.
    """
    drop_views(conn)
    for table, name in shadow.items():
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"ALTER TABLE {name} RENAME TO {table}")
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
