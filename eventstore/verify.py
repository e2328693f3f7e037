"""Svix verification of one delivery, on the raw body bytes, against every configured secret.

Headers are read by name (``svix-*`` first, ``webhook-*`` as the fallback, as svix does), each
exactly once: a repeated header is refused rather than letting the last one win silently. The
timestamp must be plain integer seconds (svix itself would accept ``"17e8"`` or ``"1.5"``, and the
store keeps it as an integer). Two checks are ours rather than the library's, so that the answer
does not depend on which ``standardwebhooks`` release svix runs on (1.3 verifies bytes that are
not UTF-8 and compares signatures as text, where 1.1 raised): the body must be UTF-8, and every
entry of ``svix-signature`` must be ``version,signature`` with a ``v1`` signature in base64.
Every failure becomes :class:`VerificationFailed` with the check that failed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.datastructures import Headers
from svix.webhooks import Webhook, WebhookVerificationError

from eventstore.errors import VerificationFailed
from eventstore.signing_secrets import SigningSecret

_EVENT_ID = re.compile(r"[\x21-\x7e]{1,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class SvixHeaders:
    """The three signed headers of a delivery (values checked for shape, not yet verified)."""

    event_id: str
    timestamp: int
    signature: str

    def as_mapping(self) -> dict[str, str]:
        return {
            "svix-id": self.event_id,
            "svix-timestamp": str(self.timestamp),
            "svix-signature": self.signature,
        }


def _one(headers: Headers, name: str) -> str | None:
    for prefix in ("svix-", "webhook-"):
        values = headers.getlist(prefix + name)
        if len(values) > 1:
            raise VerificationFailed(f"{prefix}{name} header given more than once")
        if values and values[0]:
            return values[0]
    return None


def _claimed(headers: Headers, name: str, shape: re.Pattern[str]) -> str | None:
    values = headers.getlist(f"svix-{name}") or headers.getlist(f"webhook-{name}")
    return values[0] if len(values) == 1 and shape.fullmatch(values[0]) else None


def claimed_event_id(headers: Headers) -> str | None:
    """The ``svix-id`` a request claims, if it is well-formed (for the deliveries record)."""
    return _claimed(headers, "id", _EVENT_ID)


def claimed_timestamp(headers: Headers) -> int | None:
    """The ``svix-timestamp`` a request claims, if it is integer seconds (for the deliveries
    record: it shows how far off a refused sender's clock was)."""
    value = _claimed(headers, "timestamp", _TIMESTAMP)
    return int(value) if value is not None else None


def svix_headers(headers: Headers) -> SvixHeaders:
    """The signed headers of a request, checked for presence and shape.

    :raises VerificationFailed: a header is missing, repeated or malformed.
    """
    event_id, timestamp, signature = (_one(headers, n) for n in ("id", "timestamp", "signature"))
    missing = [name for name, v in (("id", event_id), ("timestamp", timestamp),
                                    ("signature", signature)) if v is None]  # fmt: skip
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise VerificationFailed(f"missing header{plural} svix-{', svix-'.join(missing)}")
    assert event_id is not None and timestamp is not None and signature is not None
    if not _EVENT_ID.fullmatch(event_id):
        raise VerificationFailed("svix-id is not a printable message id of 1-128 characters")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise VerificationFailed("svix-timestamp is not integer seconds")
    _check_signatures(signature)
    return SvixHeaders(event_id, int(timestamp), signature)


def _check_signatures(header: str) -> None:
    """Refuse a ``svix-signature`` with an entry that is not ``version,signature`` (entries are
    separated by single spaces), or a ``v1`` signature that is not base64, wherever it stands."""
    if not all(_well_formed(entry.split(",")) for entry in header.split(" ")):
        raise VerificationFailed("svix-signature header is malformed")


def _well_formed(parts: list[str]) -> bool:
    if len(parts) != 2:
        return False
    try:
        if parts[0] == "v1":
            base64.b64decode(parts[1])  # binascii.Error is a ValueError
    except ValueError:
        return False
    return True


class Verifier:
    """Checks deliveries against one or more secrets (several during a rotation)."""

    def __init__(self, secrets: Sequence[SigningSecret]) -> None:
        if not secrets:
            raise ValueError("a Verifier needs at least one secret")
        self._webhooks = [secret.webhook() for secret in secrets]

    def verify(self, body: bytes, headers: Headers) -> SvixHeaders:
        """The delivery's headers, once ``body`` is verified under one of the secrets.

        :raises VerificationFailed: naming the check that failed.
        """
        signed = svix_headers(headers)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationFailed("body is not UTF-8, so it cannot be verified") from None
        mapping = signed.as_mapping()
        failure = "no matching signature found"
        for webhook in self._webhooks:
            try:
                webhook.verify(body, mapping)
                return signed
            except WebhookVerificationError as error:
                failure = _describe(str(error))
        raise VerificationFailed(failure)


def _describe(message: str) -> str:
    known = {
        "Message timestamp too old": "svix-timestamp is more than 5 minutes old",
        "Message timestamp too new": "svix-timestamp is more than 5 minutes in the future",
        "Invalid Signature Headers": "svix-timestamp is not a valid time",
        "No matching signature found": "no matching signature found",
        "Missing required headers": "missing svix headers",
    }
    return known.get(message, message.lower())


def sign(secret: SigningSecret, event_id: str, timestamp: int, body: bytes) -> str:
    """The ``svix-signature`` value for ``body`` (used by ``clerk-audit send`` and the tests)."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return Webhook(secret.text).sign(event_id, moment, body.decode("utf-8"))
