"""``clerk-audit checkpoint``: the log's chain head as JSON, signed when a key is configured."""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

import click

from eventstore.checkpoints import (
    SIGNING_KEY_ENV,
    Checkpoint,
    load_private_key,
    new_key,
    note_check,
    sign,
)
from eventstore.cli.options import log_option
from eventstore.errors import ConfigurationError
from eventstore.location import LogLocation, open_log_reader
from eventstore.log import chain_head
from eventstore.timefmt import now_iso


def take_checkpoint(db_path: LogLocation, key_file: Path | None) -> Checkpoint:
    """The log's chain head now, signed with the key in ``key_file`` if given."""
    with closing(open_log_reader(db_path)) as conn:
        position, head = chain_head(conn)
    checkpoint = Checkpoint(position, head.hex(), now_iso())
    return sign(checkpoint, load_private_key(key_file)) if key_file else checkpoint


def record(db_path: LogLocation, kind: Literal["verify", "checkpoint"], *fields: Any) -> None:
    """:func:`note_check`, saying so when the log could not be written."""
    problem = note_check(db_path, kind, *fields)
    if problem is not None:
        click.echo(f"clerk-audit: not recorded in integrity_checks: {problem}", err=True)


def configured_key() -> Path | None:
    value = os.environ.get(SIGNING_KEY_ENV, "").strip()
    return Path(value) if value else None


@click.command("checkpoint")
@log_option
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Write it here.")
@click.option(
    "--new-key",
    "key_to_create",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Create an Ed25519 signing key in this file (its public key in FILE.pub), then exit.",
)
def command(db_path: LogLocation, out: Path | None, key_to_create: Path | None) -> None:
    """Write the log's chain head (position, chain value, time) as JSON, to --out or stdout.

    Signed with Ed25519 when CLERK_AUDIT_SIGNING_KEY names a key file. Keep checkpoints where
    the log's writers cannot reach them: `clerk-audit verify --against FILE` then proves the
    log still extends them.

    \b
    Example:
        clerk-audit checkpoint --new-key keys/audit-signing.pem
        CLERK_AUDIT_SIGNING_KEY=keys/audit-signing.pem clerk-audit checkpoint --out cp.json
    """
    if key_to_create is not None:
        try:
            public = new_key(key_to_create)
        except FileExistsError:
            raise ConfigurationError(f"{key_to_create} exists; not overwriting a key") from None
        click.echo(f"created {key_to_create} (keep it secret) and {key_to_create}.pub")
        click.echo(f"public key {public}")
        return
    checkpoint = take_checkpoint(db_path, configured_key())
    if out is None:
        click.echo(checkpoint.as_json(), nl=False)
    else:
        out.write_text(checkpoint.as_json())
    signed = "signed" if checkpoint.signature else "unsigned"
    record(db_path, "checkpoint", checkpoint.position, checkpoint.chain, True, signed)
