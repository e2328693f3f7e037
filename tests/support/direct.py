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
