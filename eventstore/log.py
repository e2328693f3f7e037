"""Appending to and reading the ``events`` log and the ``deliveries`` record.

Functions here run inside the caller's transaction (see :func:`eventstore.db.transaction`);
they never commit. The single writer (``eventstore.writer``) is the only caller that appends.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Literal

from eventstore.envelope import Envelope, NotAnEvent, parse_document
from eventstore.errors import EventConflict
from eventstore.records import DeliveryRecord, EventRecord
from eventstore.timefmt import iso_ms

EVENT_COLUMNS = (
    "event_id", "event_type", "object_type", "object_id", "instance_id", "occurred_at",
    "received_at", "svix_timestamp", "body", "body_sha256", "status", "quarantine_reason",
)  # fmt: skip
DELIVERY_COLUMNS = (
    "event_id", "received_at", "svix_timestamp", "outcome", "reason", "remote_addr",
    "user_agent", "body_sha256",
)  # fmt: skip
_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)
_INSERT_DELIVERY = (
    f"INSERT INTO deliveries ({', '.join(DELIVERY_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(DELIVERY_COLUMNS))})"
)


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def event_record(
    *, event_id: str, svix_timestamp: int, received_at: str, body: bytes
) -> EventRecord:
    """The log record for a verified body: parsed, or quarantined if it is not an event."""
    digest = sha256_hex(body)
    try:
        document = parse_document(body)
    except NotAnEvent as reason:
        return EventRecord(
            event_id, None, None, None, None, None, received_at, svix_timestamp, body, digest,
            "quarantined", str(reason),
        )  # fmt: skip
    envelope = Envelope.model_validate(document)
    occurred = envelope.occurred_ms
    return EventRecord(
        event_id=event_id,
        event_type=envelope.type,
        object_type=envelope.object_type,
        object_id=envelope.object_id,
        instance_id=envelope.instance_id,
        occurred_at=iso_ms(occurred) if occurred is not None else None,
        received_at=received_at,
        svix_timestamp=svix_timestamp,
        body=body,
        body_sha256=digest,
        status="ok",
        quarantine_reason=None,
        envelope=envelope,
        document=document,
    )


def append(
    conn: sqlite3.Connection, record: EventRecord
) -> tuple[Literal["stored", "duplicate"], int]:
    """Append ``record`` unless its ``event_id`` is stored already.

    :returns: ``("stored", position)`` for a new event, ``("duplicate", position)`` for one
        stored before with the same body.
    :raises EventConflict: the ``event_id`` is stored with a different body (left untouched).
    """
    found = conn.execute(
        "SELECT position, body_sha256 FROM events WHERE event_id = ?", (record.event_id,)
    ).fetchone()
    if found is not None:
        position, stored_sha256 = found
        if stored_sha256 != record.body_sha256:
            raise EventConflict(
                f"event {record.event_id} is already stored (position {position}) "
                "with a different body; the stored event is kept"
            )
        return "duplicate", position
    values = tuple(getattr(record, column) for column in EVENT_COLUMNS)
    cursor = conn.execute(_INSERT_EVENT, values)
    assert cursor.lastrowid is not None
    return "stored", cursor.lastrowid


def record_delivery(conn: sqlite3.Connection, delivery: DeliveryRecord) -> None:
    """Add one ``deliveries`` row."""
    conn.execute(_INSERT_DELIVERY, tuple(getattr(delivery, c) for c in DELIVERY_COLUMNS))


def log_position(conn: sqlite3.Connection) -> int:
    """The position of the last stored event (0 for an empty log)."""
    (position,) = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
    return int(position)
