"""Signing test deliveries for real with svix (never a mock of verification)."""

from __future__ import annotations

import base64
import secrets
import time
from datetime import UTC, datetime

from svix.webhooks import Webhook


def new_secret() -> str:
    """A throwaway ``whsec_`` secret of 24 random bytes, as Clerk shows them."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def new_event_id() -> str:
    """A fresh ``msg_``-shaped svix id."""
    return "msg_" + secrets.token_hex(12)


def signed_headers(
    secret: str, event_id: str, body: bytes, *, at: int | None = None
) -> dict[str, str]:
    """The three svix headers for ``body``, signed now (or at unix second ``at``)."""
    timestamp = int(time.time()) if at is None else at
    signature = Webhook(secret).sign(
        event_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode("utf-8")
    )
    return {
        "svix-id": event_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": signature,
        "content-type": "application/json",
    }
