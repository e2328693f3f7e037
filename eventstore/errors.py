"""The one exception hierarchy of clerk-audit.

Every error the store raises on purpose is one of these. The HTTP layer translates them to
status codes in one place (``eventstore.app``); the CLI prints ``str(error)`` on one line.

* AuditStoreError
  + ConfigurationError       a setting is missing or malformed (bad secret, bad path)
  + DeliveryRejected         a request to the ingest route is refused (4xx, nothing stored)
    - VerificationFailed     missing headers, bad signature, timestamp outside ±5 min (400)
    - BodyTooLarge           the body exceeds the configured limit (413)
    - BodyIncomplete         the client went away before sending the whole body (400)
  + EventConflict            a stored ``event_id`` arrived again with a different body (409)
  + StoreError               the SQLite store cannot do what was asked
    - StoreUnavailable       it cannot commit now: locked too long, disk full, read-only (503)
    - StoreCorrupt           the file is not a readable clerk-audit database
  + SendFailed               ``clerk-audit send`` could not deliver an event
  + FeedRefused              a request to ``GET /events`` is refused
    - FeedUnauthorized       no bearer token, or not the configured one (401)
    - BadFeedRequest         a bad cursor, limit, wait or parameter (400)
  + ImportRefused            ``clerk-audit import`` refused a line (named by its number)
  + BackfillFailed           ``clerk-audit backfill`` could not read Clerk's Backend API
"""

from __future__ import annotations


class AuditStoreError(Exception):
    """Base class: every deliberate clerk-audit error."""

    status: int = 500
    outcome: str = "unavailable"

    @property
    def public(self) -> str:
        """What an HTTP client is told (the message, unless it names server internals)."""
        return str(self)


class ConfigurationError(AuditStoreError):
    """A setting is missing or malformed; raised at start-up, before serving."""


class DeliveryRejected(AuditStoreError):
    """The ingest route refuses a request; a ``deliveries`` row records why."""

    status = 400
    outcome = "rejected"


class VerificationFailed(DeliveryRejected):
    """Svix verification failed: the message says which check."""


class BodyTooLarge(DeliveryRejected):
    """The request body is larger than ``CLERK_AUDIT_MAX_BODY_BYTES``."""

    status = 413
    outcome = "too_large"


class BodyIncomplete(DeliveryRejected):
    """The client disconnected before the body was complete (nobody reads the answer, but the
    ``deliveries`` row records the attempt)."""


class EventConflict(AuditStoreError):
    """The ``event_id`` is already stored with a different body; the stored one stays."""

    status = 409
    outcome = "conflict"


class StoreError(AuditStoreError):
    """The SQLite store failed. The message names the file for the operator; HTTP clients get
    ``public``, which does not."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self._public = public

    def __reduce__(self) -> tuple[type[StoreError], tuple[str, str | None]]:
        """Pickled whole (a rebuild's worker processes send their errors back)."""
        return type(self), (str(self), self._public)

    @property
    def public(self) -> str:
        return self._public or "the store failed; see the server log"


class StoreUnavailable(StoreError):
    """The store cannot commit now (locked, full, read-only); the sender should retry."""

    status = 503
    outcome = "unavailable"


class StoreCorrupt(StoreError):
    """The database file is not a readable clerk-audit store."""

    status = 503
    outcome = "unavailable"


class SendFailed(AuditStoreError):
    """``clerk-audit send`` could not reach the server, or a delivery was refused."""


class FeedRefused(AuditStoreError):
    """A request to the consumers' feed (``GET /events``) is refused."""

    status = 400
    outcome = "rejected"


class FeedUnauthorized(FeedRefused):
    """No bearer token, or not ``CLERK_AUDIT_FEED_TOKEN``."""

    status = 401


class BadFeedRequest(FeedRefused):
    """A bad ``after``, ``limit``, ``wait`` or an unknown parameter: the message says which."""


class ImportRefused(AuditStoreError):
    """An import file's line cannot be imported (truncated, not JSON, wrong hash, ...); the
    message names the line. Lines before it are imported, nothing from it on."""


class BackfillFailed(AuditStoreError):
    """Clerk's Backend API refused the key, or kept failing after the retries."""
