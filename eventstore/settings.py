"""The server's settings (CONTRACT §2), read once at start-up and checked strictly."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from eventstore.checkpointer import CheckpointPolicy
from eventstore.checkpoints import SIGNING_KEY_ENV
from eventstore.db import BUSY_TIMEOUT_MS
from eventstore.errors import ConfigurationError
from eventstore.location import LogLocation
from eventstore.signing_secrets import (
    SigningSecret,
    dev_secret_path,
    ensure_dev_secret,
    parse_secrets,
    read_dev_secret,
)

SECRET_ENV = "CLERK_WEBHOOK_SIGNING_SECRET"
MAX_BODY_ENV = "CLERK_AUDIT_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 1_048_576
BUSY_TIMEOUT_ENV = "CLERK_AUDIT_BUSY_TIMEOUT_MS"
"""How long a write waits for another connection's lock before answering 503 (milliseconds).
Keep it well under Svix's 15 s answer deadline."""
FEED_TOKEN_ENV = "CLERK_AUDIT_FEED_TOKEN"
"""The bearer token of ``GET /events`` (CONTRACT §9); the route does not exist without it."""
MIN_FEED_TOKEN_CHARS = 16
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""How the server (and its projector process) log."""


@dataclass(frozen=True, slots=True)
class Settings:
    db_path: LogLocation
    """The log: a SQLite file or a PostgreSQL database."""
    projections_path: Path
    secrets: tuple[SigningSecret, ...] = field(repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    dev_secret: bool = False
    """True when the secret is the development one (Clerk's deliveries will not match it)."""
    busy_timeout_ms: int = BUSY_TIMEOUT_MS
    feed_token: str | None = field(default=None, repr=False)
    """``CLERK_AUDIT_FEED_TOKEN``: None leaves ``GET /events`` out of the app."""


def _positive_int(env: Mapping[str, str], name: str, default: int, unit: str) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigurationError(f"{name} must be a positive number of {unit}")
    return int(text)


def max_body_bytes(env: Mapping[str, str]) -> int:
    """``CLERK_AUDIT_MAX_BODY_BYTES`` as a positive integer (default 1 MiB)."""
    return _positive_int(env, MAX_BODY_ENV, DEFAULT_MAX_BODY_BYTES, "bytes")


def busy_timeout_ms(env: Mapping[str, str]) -> int:
    """``CLERK_AUDIT_BUSY_TIMEOUT_MS`` as a positive integer (default 5000)."""
    return _positive_int(env, BUSY_TIMEOUT_ENV, BUSY_TIMEOUT_MS, "milliseconds")


def feed_token(env: Mapping[str, str]) -> str | None:
    """``CLERK_AUDIT_FEED_TOKEN`` (None when unset or empty); a short one stops start-up."""
    token = env.get(FEED_TOKEN_ENV, "").strip()
    if not token:
        return None
    if len(token) < MIN_FEED_TOKEN_CHARS:
        raise ConfigurationError(
            f"{FEED_TOKEN_ENV} must be at least {MIN_FEED_TOKEN_CHARS} characters "
            "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def configured_secrets(
    flag: str | None, env: Mapping[str, str]
) -> tuple[SigningSecret, ...] | None:
    """The secrets given by ``--secret``, else by the env var; None when neither is set."""
    if flag is not None:
        return parse_secrets(flag, "--secret")
    if SECRET_ENV in env:
        return parse_secrets(env[SECRET_ENV], SECRET_ENV)
    return None


def resolve_secrets(
    db_path: Path,
    flag: str | None,
    env: Mapping[str, str],
    announce: Callable[[str], None] | None = None,
) -> tuple[tuple[SigningSecret, ...], bool]:
    """The secrets to verify with: ``--secret``, else the env var, else the development secret
    kept beside the store (created once; ``announce`` is told). Returns (secrets, is_dev)."""
    configured = configured_secrets(flag, env)
    if configured is not None:
        return configured, False
    path = dev_secret_path(db_path)
    created = ensure_dev_secret(path)
    if announce is not None:
        verb = "created" if created else "using"
        announce(
            f"{SECRET_ENV} is not set: {verb} the development secret in {path}; "
            "Clerk's deliveries will not match it (see README, 'Point Clerk at it')"
        )
    return read_dev_secret(path), True


INSTANCE_ENV = "CLERK_AUDIT_INSTANCE_ID"
"""This store's Clerk instance: the projector keeps other instances' events out of the entity
tables (``projections.instance``)."""


def configured_instance(env: Mapping[str, str] | None = None) -> str | None:
    """``CLERK_AUDIT_INSTANCE_ID`` (None when unset or empty: no event is filtered)."""
    value = (os.environ if env is None else env).get(INSTANCE_ENV, "").strip()
    if not value:
        return None
    if not value.startswith("ins_") or not value.isascii() or " " in value:
        raise ConfigurationError(
            f"{INSTANCE_ENV} must be a Clerk instance id (ins_..., shown in the dashboard "
            "and in every event's instance_id)"
        )
    return value


CHECKPOINT_DIR_ENV = "CLERK_AUDIT_CHECKPOINT_DIR"
CHECKPOINT_EVERY_ENV = "CLERK_AUDIT_CHECKPOINT_EVERY"
CHECKPOINT_MINUTES_ENV = "CLERK_AUDIT_CHECKPOINT_MINUTES"


def checkpoint_policy(
    folder: Path | None, env: Mapping[str, str] | None = None
) -> CheckpointPolicy | None:
    """Where and how often ``serve`` writes checkpoints: ``--checkpoint-dir``, else
    ``CLERK_AUDIT_CHECKPOINT_DIR`` (None: it writes none), every
    ``CLERK_AUDIT_CHECKPOINT_EVERY`` events (10,000) or ``CLERK_AUDIT_CHECKPOINT_MINUTES``
    (60), signed with ``CLERK_AUDIT_SIGNING_KEY`` if set."""
    env = os.environ if env is None else env
    where = folder or (Path(env[CHECKPOINT_DIR_ENV]) if env.get(CHECKPOINT_DIR_ENV) else None)
    if where is None:
        return None
    key = env.get(SIGNING_KEY_ENV, "").strip()
    return CheckpointPolicy(
        where,
        _positive_int(env, CHECKPOINT_EVERY_ENV, 10_000, "events"),
        _positive_int(env, CHECKPOINT_MINUTES_ENV, 60, "minutes"),
        Path(key) if key else None,
    )


def dev_secret_home(db_path: LogLocation, projections: Path) -> Path:
    """The file whose folder holds the development secret: the SQLite log, or for a
    PostgreSQL log the projections file (the one file of the store on this machine)."""
    return db_path if isinstance(db_path, Path) else projections


def load_settings(
    db_path: LogLocation,
    projections: Path,
    *,
    secret: str | None = None,
    env: Mapping[str, str] | None = None,
    announce: Callable[[str], None] | None = None,
) -> Settings:
    """Settings for ``serve`` from its flags and the environment."""
    env = os.environ if env is None else env
    limit, busy, token = max_body_bytes(env), busy_timeout_ms(env), feed_token(env)
    secrets, is_dev = resolve_secrets(dev_secret_home(db_path, projections), secret, env, announce)
    return Settings(db_path, projections, secrets, limit, is_dev, busy, token)
