"""Appending events to a store the way the server's writer does, without HTTP.

For property tests that need hundreds of stores: the same ``AppendJob`` and live projector
the writer runs, in one transaction per event (HTTP and svix are covered by the server tests).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from eventstore.db import open_store, transaction
from eventstore.writer import Appended, AppendJob, append_jobs
from projections import ensure_current, project, state_digest, table_digests

RECEIVED = "2026-11-23T12:00:00.000Z"


def new_store(path: Path) -> sqlite3.Connection:
    """A created store with current (empty) projections."""
    open_store(path, create=True).close()
    ensure_current(path)
    return open_store(path)


def _job(event_id: str, body: bytes) -> AppendJob:
    return AppendJob(event_id, 1, RECEIVED, body)


def append(conn: sqlite3.Connection, event_id: str, body: bytes) -> Appended:
    """Append one verified event and project it, as the writer does, in its own transaction."""
    with transaction(conn):
        return _job(event_id, body).run(conn, project)


def append_all(conn: sqlite3.Connection, events: Iterable[tuple[str, bytes]]) -> None:
    """Append events in order as one group (one transaction and one batch), as the writer
    groups them."""
    with transaction(conn):
        append_jobs(conn, [_job(event_id, body) for event_id, body in events], project)


def digest(conn: sqlite3.Connection) -> str:
    """The state digest of the live projections."""
    return state_digest(table_digests(conn))
