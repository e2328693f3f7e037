"""Appending events to a store the way the server's writer does, without HTTP.

For property tests that need hundreds of stores: the same ``AppendJob`` and live projector
the writer runs, in one transaction per event (HTTP and svix are covered by the server tests).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from eventstore.db import open_store, transaction
from eventstore.log import event_record
from eventstore.records import DeliveryRecord
from eventstore.writer import Appended, AppendJob
from projections import ensure_current, project, state_digest, table_digests

RECEIVED = "2026-11-23T12:00:00.000Z"


def new_store(path: Path) -> sqlite3.Connection:
    """A created store with current (empty) projections."""
    open_store(path, create=True).close()
    ensure_current(path)
    return open_store(path)


def _run(conn: sqlite3.Connection, event_id: str, body: bytes) -> Appended:
    record = event_record(event_id=event_id, svix_timestamp=1, received_at=RECEIVED, body=body)
    delivery = DeliveryRecord(received_at=RECEIVED, outcome="stored", event_id=event_id)
    return AppendJob(record, delivery).run(conn, project)


def append(conn: sqlite3.Connection, event_id: str, body: bytes) -> Appended:
    """Append one verified event and project it, as the writer does, in its own transaction."""
    with transaction(conn):
        return _run(conn, event_id, body)


def append_all(conn: sqlite3.Connection, events: Iterable[tuple[str, bytes]]) -> None:
    """Append events in order as one group (one transaction), as the writer groups them."""
    with transaction(conn):
        for event_id, body in events:
            _run(conn, event_id, body)


def digest(conn: sqlite3.Connection) -> str:
    """The state digest of the live projections."""
    return state_digest(table_digests(conn))
