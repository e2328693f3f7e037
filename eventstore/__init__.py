"""clerk-audit's event store: verified Clerk webhooks appended to an immutable SQLite log."""

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
from eventstore.jsondoc import NotAnEvent
from eventstore.records import DeliveryRecord, EventRecord

__all__ = [
    "AuditStoreError",
    "BodyTooLarge",
    "ConfigurationError",
    "DeliveryRecord",
    "DeliveryRejected",
    "EventConflict",
    "EventRecord",
    "NotAnEvent",
    "StoreCorrupt",
    "StoreError",
    "StoreUnavailable",
    "VerificationFailed",
]
