"""``clerk-audit send``: sign sample events with svix and POST them to a running server."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import click
import httpx

from eventstore.cli.options import log_option, projections_option
from eventstore.errors import ConfigurationError, SendFailed
from eventstore.location import LogLocation
from eventstore.paths import projections_path
from eventstore.samples import sample_body, sample_event_id, sample_names
from eventstore.settings import SECRET_ENV, configured_secrets, dev_secret_home
from eventstore.signing_secrets import (
    SigningSecret,
    dev_secret_path,
    read_dev_secret,
)
from eventstore.verify import sign

DEFAULT_URL = "http://127.0.0.1:8000/webhooks/clerk"


def _secrets(flag: str | None, home: Path) -> tuple[SigningSecret, ...]:
    """As the server resolves them, but never creating the development secret (beside
    ``home``: :func:`eventstore.settings.dev_secret_home`)."""
    configured = configured_secrets(flag, os.environ)
    if configured is not None:
        return configured
    path = dev_secret_path(home)
    if not path.exists():
        raise ConfigurationError(
            f"no signing secret: set {SECRET_ENV}, or start `clerk-audit serve` once "
            f"to create the development secret {path}"
        )
    return read_dev_secret(path)


def _event(name_or_file: str) -> tuple[str, bytes]:
    """The svix-id and body to send for a sample name or a JSON file."""
    if name_or_file in sample_names():
        return sample_event_id(name_or_file), sample_body(name_or_file)
    path = Path(name_or_file)
    if not path.is_file():
        raise click.BadParameter(f"{name_or_file} is neither a sample name nor a file")
    body = path.read_bytes()
    return "msg_file_" + hashlib.sha256(body).hexdigest()[:24], body


def _post(client: httpx.Client, url: str, secrets: tuple[SigningSecret, ...],
          event_id: str, body: bytes) -> httpx.Response:  # fmt: skip
    now = int(time.time())
    signature = " ".join(sign(secret, event_id, now, body) for secret in secrets)
    headers = {"svix-id": event_id, "svix-timestamp": str(now), "svix-signature": signature,
               "content-type": "application/json", "user-agent": "clerk-audit-send"}  # fmt: skip
    try:
        return client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise SendFailed(f"cannot reach {url}: {error} (is `clerk-audit serve` running?)") from None


@click.command("send", epilog="Samples: " + ", ".join(sample_names()))
@click.option("--url", default=DEFAULT_URL, show_default=True, help="The ingest route.")
@click.option("--secret", help=f"Secret(s) to sign with [default: {SECRET_ENV}, else the "
              "development secret beside the store].")  # fmt: skip
@log_option
@projections_option
@click.argument("events", nargs=-1, required=True, metavar="NAME_OR_FILE...")
def command(
    url: str,
    secret: str | None,
    db_path: LogLocation,
    projections_db: Path | None,
    events: tuple[str, ...],
) -> None:
    """Sign Clerk events with svix and POST them to a running server.

    A NAME is a shipped sample (listed below), sent with its own svix-id, so sending it twice
    is answered "duplicate". A FILE is sent with an svix-id derived from its contents.

    \b
    Example:
        clerk-audit send user.created organizationMembership.created
    """
    home = dev_secret_home(db_path, projections_path(db_path, projections_db))
    secrets = _secrets(secret, home)
    failed = 0
    with httpx.Client(timeout=20) as client:
        for name in events:
            event_id, body = _event(name)
            response = _post(client, url, secrets, event_id, body)
            click.echo(f"{name}: {response.status_code} {response.text}")
            failed += not response.is_success
    if failed:
        raise SendFailed(f"{failed} of {len(events)} deliveries were not accepted")
