"""Checkpoints of the log's chain head, signed with Ed25519 when a key is configured.

A checkpoint (``{"position", "chain", "time"}``, plus ``"signature"`` and ``"public_key"``
when signed) is kept somewhere the log's writers cannot reach. ``verify --against`` then proves
the log still extends it: the chain value at its position must be the one it recorded. That
catches what a chain alone cannot: a log truncated, or rewritten from some position on with
links recomputed. The signature covers the canonical JSON of the three fields; it is checked
with a trusted public key (``--public-key``, or the one of ``CLERK_AUDIT_SIGNING_KEY``), else
with the key the checkpoint carries, which proves only that it was not altered since signing.
"""

from __future__ import annotations

import base64
import json
import os
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eventstore.backends import log_transaction, open_log
from eventstore.errors import ConfigurationError, StoreError
from eventstore.location import LogLocation
from eventstore.log import record_check
from eventstore.timefmt import now_iso

SIGNING_KEY_ENV = "CLERK_AUDIT_SIGNING_KEY"


class CheckpointRefused(ConfigurationError):
    """A checkpoint file is unreadable, or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    position: int
    chain: str
    """The chain value at :attr:`position` (hex)."""
    time: str
    signature: str | None = None
    """Ed25519 over :meth:`signed_bytes`, base64."""
    public_key: str | None = None
    """The signer's raw public key, base64."""

    def signed_bytes(self) -> bytes:
        body = {"chain": self.chain, "position": self.position, "time": self.time}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def as_json(self) -> str:
        fields = {"position": self.position, "chain": self.chain, "time": self.time}
        if self.signature is not None:
            fields |= {"signature": self.signature, "public_key": self.public_key}
        return json.dumps(fields, indent=2) + "\n"


def new_key(path: Path) -> str:
    """Write a new Ed25519 private key to ``path`` (mode 0600, PEM) and its public key beside
    it (``path.pub``); returns the public key (base64)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    public = key.public_key()
    path.with_name(path.name + ".pub").write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return _raw(public)


def _raw(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"cannot read the signing key {path}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"the signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key file (PEM), or the public half of a private key file."""
    data = _read(path)
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        return load_private_key(path).public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"the public key {path} is not an Ed25519 key")
    return key


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror}") from None


def sign(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> Checkpoint:
    signature = base64.b64encode(key.sign(checkpoint.signed_bytes())).decode()
    return Checkpoint(
        checkpoint.position, checkpoint.chain, checkpoint.time, signature, _raw(key.public_key())
    )


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint in ``path``.

    :raises CheckpointRefused: the file is not a checkpoint.
    """
    try:
        fields = json.loads(_read(path))
        checkpoint = Checkpoint(
            int(fields["position"]), str(fields["chain"]), str(fields["time"]),
            fields.get("signature"), fields.get("public_key"),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointRefused(f"{path} is not a clerk-audit checkpoint ({error})") from None
    if len(checkpoint.chain) != 64 or checkpoint.position < 0:
        raise CheckpointRefused(f"{path} is not a clerk-audit checkpoint")
    return checkpoint


def check_signature(checkpoint: Checkpoint, trusted: Ed25519PublicKey | None) -> str:
    """Verify a signed checkpoint's signature, with ``trusted`` if given (else the key it
    carries); returns what was proven, for the report.

    :raises CheckpointRefused: the signature does not verify, or was made by another key.
    """
    if checkpoint.signature is None:
        if trusted is not None:
            raise CheckpointRefused("the checkpoint is not signed, but a signing key is set")
        return "unsigned checkpoint"
    try:
        carried = Ed25519PublicKey.from_public_bytes(base64.b64decode(checkpoint.public_key or ""))
        key = trusted or carried
        key.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_bytes())
    except (InvalidSignature, ValueError):
        raise CheckpointRefused("the checkpoint's signature does not verify") from None
    if trusted is None:
        return "signature valid for the key the checkpoint carries (not a pinned key)"
    return "signature valid for the trusted key"


def note_check(
    db_path: LogLocation, kind: Literal["verify", "checkpoint"], *fields: Any
) -> str | None:
    """Add a row to the log's ``integrity_checks`` (for the auditor's page); returns why it
    could not be written, or None."""
    try:
        with closing(open_log(db_path, create=False)) as conn, log_transaction(conn, db_path):
            record_check(conn, kind, now_iso(), *fields)
    except StoreError as error:
        return error.public
    return None
