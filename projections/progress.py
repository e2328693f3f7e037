"""How far the projections have followed the log, read without writing anything (for
``/healthz``, ``stats`` and Datasette)."""

from __future__ import annotations

import os
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from eventstore.engine import sqlite3
from projections.schema import ERRORS
from projections.tables import checkpoint, is_current, row_counts


@dataclass(frozen=True, slots=True)
class Progress:
    position: int
    """The last log position projected (quarantined and failed events included)."""
    errors: int
    """Rows of ``projection_errors``."""


def _reader(path: Path) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=1.0, isolation_level=None)


def _progress(conn: sqlite3.Connection) -> Progress:
    conn.execute("BEGIN")
    try:
        if not is_current(conn):
            return Progress(0, 0)
        (errors,) = conn.execute(f"SELECT count(*) FROM {ERRORS}").fetchone()
        return Progress(checkpoint(conn), int(errors))
    finally:
        conn.execute("COMMIT")


def read_progress(path: Path) -> Progress:
    """The projections' checkpoint and error count; zeros while there are no projections of
    this version (none yet, or a file being rebuilt for this version, or one that cannot be
    read: the projector recreates it, and ingest never depends on it)."""
    try:
        with closing(_reader(path)) as conn:
            return _progress(conn)
    except (sqlite3.Error, OSError):
        return Progress(0, 0)


class ProgressReader:
    """:func:`read_progress` for a caller that asks often (``/healthz``): one connection, kept
    while the projections path leads to the same file, opened again after a swap."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None

    def read(self) -> Progress:
        try:
            found = os.stat(self._path)
            if self._conn is None or self._file != (found.st_dev, found.st_ino):
                self.close()
                self._conn, self._file = _reader(self._path), (found.st_dev, found.st_ino)
            return _progress(self._conn)
        except (sqlite3.Error, OSError):
            self.close()
            return Progress(0, 0)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._file = None, None


def projection_rows(path: Path) -> dict[str, int]:
    """Rows per projection table (empty while there is no readable projections file)."""
    try:
        with closing(_reader(path)) as conn:
            conn.execute("BEGIN")
            return row_counts(conn)
    except (sqlite3.Error, OSError):
        return {}
