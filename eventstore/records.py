"""The frozen records passed around inside the store (pydantic stays at the edge)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EventStatus = Literal["ok", "quarantined"]
Outcome = Literal[
    "stored", "duplicate", "conflict", "quarantined", "rejected", "too_large", "unavailable"
]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One verified event, as appended to the ``events`` log (columns of CONTRACT §5)."""

    event_id: str
    """The ``svix-id``: the same on every retry and replay."""
    event_type: str | None
    """Clerk's ``type`` (``user.created``); None only for a quarantined body."""
    object_type: str | None
    """The resource part of ``event_type`` (``organizationMembership``)."""
    object_id: str | None
    """``data.id``."""
    instance_id: str | None
    occurred_at: str | None
    """Clerk's time for the event (CONTRACT §6), ISO-8601 UTC with ms."""
    received_at: str
    """Our time when the delivery that stored it arrived."""
    svix_timestamp: int
    """The signed ``svix-timestamp`` of that delivery (attempt time, seconds)."""
    body: bytes
    """The raw body, byte-exact."""
    body_sha256: str
    status: EventStatus
    quarantine_reason: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One HTTP request to the ingest route, whatever its outcome (no body)."""

    received_at: str
    outcome: Outcome
    event_id: str | None = None
    svix_timestamp: int | None = None
    reason: str | None = None
    remote_addr: str | None = None
    user_agent: str | None = None
    body_sha256: str | None = None
