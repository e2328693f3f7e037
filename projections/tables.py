"""Creating and describing the tables of a projections file.

``_projection_meta`` records the schema fingerprint the file was built with, the Clerk instance
it was built for (``instance_id``, empty for none: ``projections.instance``) and the
checkpoint: the last log position its rows reflect, written in the same transaction as those
rows.
Functions here run inside the caller's transaction.
"""

from __future__ import annotations

from eventstore.engine import sqlite3
from projections.schema import (
    ERRORS,
    ERRORS_DDL,
    INDEXES,
    META,
    META_DDL,
    PROJECTION_TABLES,
    SEARCH_DDL,
    TIMELINE,
    VIEWS,
    fingerprint,
    index_ddl,
    table_ddl,
    view_ddl,
)
from projections.search import index_rows


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    """The bookkeeping values (empty for a file without tables yet)."""
    try:
        return dict(conn.execute(f"SELECT key, value FROM {META}").fetchall())
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return {}
        raise


def write_meta(conn: sqlite3.Connection, **values: str | int) -> None:
    conn.executemany(
        f"INSERT OR REPLACE INTO {META} VALUES (?, ?)", [(k, str(v)) for k, v in values.items()]
    )


def checkpoint(conn: sqlite3.Connection) -> int:
    """The last log position these projections reflect (0 before the first event)."""
    return int(read_meta(conn).get("position", "0"))


def set_checkpoint(conn: sqlite3.Connection, position: int) -> None:
    write_meta(conn, position=position)


def is_current(conn: sqlite3.Connection) -> bool:
    """Whether the tables were built by this version of the code."""
    return read_meta(conn).get("fingerprint") == fingerprint()


def built_for(conn: sqlite3.Connection) -> str | None:
    """The Clerk instance these projections were built for (None: every instance's events
    were projected)."""
    return read_meta(conn).get("instance_id") or None


def is_current_for(conn: sqlite3.Connection, instance: str | None) -> bool:
    """Whether the tables were built by this version of the code for ``instance``."""
    meta = read_meta(conn)
    return meta.get("fingerprint") == fingerprint() and (meta.get("instance_id") or None) == (
        instance
    )


def create_tables(conn: sqlite3.Connection, instance: str | None = None) -> None:
    """Every table, empty, without indexes (a rebuild adds them after the load), for the
    Clerk instance ``instance``."""
    for table in PROJECTION_TABLES:
        conn.execute(table_ddl(table, table))
    conn.execute(ERRORS_DDL)
    conn.execute(META_DDL)
    write_meta(conn, fingerprint=fingerprint(), position=0, instance_id=instance or "")


def create_indexes(conn: sqlite3.Connection) -> None:
    for index in INDEXES:
        conn.execute(index_ddl(index))
    for view in VIEWS:
        conn.execute(view_ddl(view))


def create_search(conn: sqlite3.Connection) -> None:
    """The timeline's full-text index, built from the rows already there (a rebuild makes it
    last: one pass over them all costs less than a batch at a time)."""
    for statement in SEARCH_DDL:
        conn.execute(statement)
    index_rows(conn, TIMELINE)


def create_schema(conn: sqlite3.Connection, instance: str | None = None) -> None:
    """Tables, indexes and views of an empty projections file."""
    create_tables(conn, instance)
    create_indexes(conn)
    create_search(conn)


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """``{table: rows}`` for every projection table and ``projection_errors``."""
    tables = (*PROJECTION_TABLES, ERRORS)
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
