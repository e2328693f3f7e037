"""Clerk signing secrets: parsed strictly at start-up, never shown.

A secret is ``whsec_`` + base64, as the Clerk Dashboard shows it. During a rotation several are
configured, separated by spaces or commas. Python's base64 decoder silently drops junk characters,
so each secret is decoded with ``validate=True`` here, before svix ever sees it: a malformed
secret stops start-up instead of failing every delivery with "No matching signature found".

The secret text lives only inside :class:`SigningSecret`; its ``repr`` and ``str`` are masked so a
log line or a traceback cannot carry it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from eventstore.errors import ConfigurationError

if TYPE_CHECKING:
    from svix.webhooks import Webhook

PREFIX = "whsec_"
MIN_KEY_BYTES = 24
DEV_SECRET_FILE = "dev-signing-secret"
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class SigningSecret:
    """One endpoint secret; ``label`` (``secret 1``) is what logs and errors may show."""

    label: str
    text: str = field(repr=False)

    def __str__(self) -> str:
        return self.label

    def webhook(self) -> Webhook:
        from svix.webhooks import Webhook  # imported here: most commands never verify

        return Webhook(self.text)


def _check_one(text: str, label: str) -> None:
    if not text.startswith(PREFIX):
        raise ConfigurationError(f"{label} does not start with {PREFIX!r}")
    encoded = text.removeprefix(PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{label} is not valid base64 after {PREFIX!r}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(f"{label} is too short ({len(key)} bytes, want {MIN_KEY_BYTES}+)")


def parse_secrets(value: str, source: str) -> tuple[SigningSecret, ...]:
    """The secrets in ``value`` (separated by spaces or commas), each checked strictly.

    :param source: where ``value`` came from, for error messages (never the value itself).
    :raises ConfigurationError: ``value`` is empty or a secret is malformed.
    """
    texts = [text for text in _SEPARATORS.split(value.strip()) if text]
    if not texts:
        raise ConfigurationError(f"{source} is set but empty")
    parsed = []
    for number, text in enumerate(texts, start=1):
        label = f"secret {number} of {source}" if len(texts) > 1 else f"the secret in {source}"
        _check_one(text, label)
        parsed.append(SigningSecret(f"secret {number}", text))
    return tuple(parsed)


def new_secret_text() -> str:
    """A fresh random ``whsec_`` secret of 32 bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def dev_secret_path(db_path: Path) -> Path:
    """The development secret file that belongs with the store at ``db_path``."""
    return db_path.parent / DEV_SECRET_FILE


def ensure_dev_secret(path: Path) -> bool:
    """Create the development secret file (mode 0600) unless it exists; True if created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except FileNotFoundError:
        raise ConfigurationError(f"database folder {path.parent} does not exist") from None
    except OSError as error:
        raise ConfigurationError(f"cannot create {path}: {error.strerror}") from None
    with os.fdopen(fd, "w") as file:
        file.write(new_secret_text() + "\n")
    return True


def read_dev_secret(path: Path) -> tuple[SigningSecret, ...]:
    """The secret stored in the development secret file at ``path``."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror}") from None
    return parse_secrets(text, str(path))
