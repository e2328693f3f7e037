"""clerk-audit's event store: verified Clerk webhooks appended to an immutable SQLite log."""

from eventstore.envelope import Envelope, NotAnEvent, parse_envelope
from eventstore.errors import (
    AuditStoreError,
    BodyTooLarge,
    ConfigurationError,
    DeliveryRejected,
    EventConflict,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    VerificationFailed,
)
from eventstore.records import DeliveryRecord, EventRecord

__all__ = [
    "AuditStoreError",
    "BodyTooLarge",
    "ConfigurationError",
    "DeliveryRecord",
    "DeliveryRejected",
    "Envelope",
    "EventConflict",
    "EventRecord",
    "NotAnEvent",
    "StoreCorrupt",
    "StoreError",
    "StoreUnavailable",
    "VerificationFailed",
    "parse_envelope",
]
