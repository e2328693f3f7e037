"""How far the projections have followed the log, read without writing anything (for
``/healthz``, ``stats`` and Datasette)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

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


def read_progress(path: Path) -> Progress:
    """The projections' checkpoint and error count; zeros while there are no projections of
    this version (none yet, or a file being rebuilt for this version, or one that cannot be
    read: the projector recreates it, and ingest never depends on it)."""
    try:
        with closing(_reader(path)) as conn:
            conn.execute("BEGIN")
            if not is_current(conn):
                return Progress(0, 0)
            (errors,) = conn.execute(f"SELECT count(*) FROM {ERRORS}").fetchone()
            return Progress(checkpoint(conn), int(errors))
    except (sqlite3.Error, OSError):
        return Progress(0, 0)


def projection_rows(path: Path) -> dict[str, int]:
    """Rows per projection table (empty while there is no readable projections file)."""
    try:
        with closing(_reader(path)) as conn:
            conn.execute("BEGIN")
            return row_counts(conn)
    except (sqlite3.Error, OSError):
        return {}
