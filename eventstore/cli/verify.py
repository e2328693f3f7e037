"""``clerk-audit verify``: recompute the log's hash chain, and prove it extends a checkpoint."""

from __future__ import annotations

import os
import sys
from contextlib import closing, nullcontext
from pathlib import Path
from typing import NoReturn

import click

from eventstore.chain import ChainReport
from eventstore.chain_check import verify_log
from eventstore.checkpoints import (
    SIGNING_KEY_ENV,
    Checkpoint,
    check_signature,
    load_public_key,
    read_checkpoint,
)
from eventstore.cli.checkpoint import record
from eventstore.cli.options import log_option
from eventstore.location import LogLocation, open_log_reader
from eventstore.log import chain_at, log_position
from eventstore.redaction import Redacted, redacted_positions


def _fail(db_path: LogLocation, position: int, message: str) -> NoReturn:
    """Record the failed verify, say what failed and exit 1."""
    record(db_path, "verify", position, None, False, message)
    click.echo(f"clerk-audit: {message}", err=True)
    sys.exit(1)


def _verify(db_path: LogLocation, workers: int | None) -> tuple[ChainReport, Redacted]:
    with closing(open_log_reader(db_path)) as conn:
        total = log_position(conn)
        redacted = redacted_positions(conn)
    bar = (
        click.progressbar(length=total, label="events", file=sys.stderr)
        if sys.stderr.isatty()
        else nullcontext(None)
    )
    with bar as shown:
        report = verify_log(db_path, workers, progress=shown.update if shown else None)
    return report, redacted


def _against(db_path: LogLocation, checkpoint: Checkpoint, report: ChainReport) -> str:
    """Fail unless the verified log reaches the checkpoint's position with its chain value."""
    if report.position < checkpoint.position:
        _fail(db_path, report.position, f"the log ends at position {report.position}, before "
              f"the checkpoint's {checkpoint.position}: it was truncated or rewritten")  # fmt: skip
    with closing(open_log_reader(db_path)) as conn:
        found = chain_at(conn, checkpoint.position)
    if found != checkpoint.chain:
        _fail(db_path, checkpoint.position, f"position {checkpoint.position} does not have the "
              "checkpoint's chain value: the log was rewritten since the checkpoint")  # fmt: skip
    return f"extends the checkpoint at position {checkpoint.position} ({checkpoint.time})"


@click.command("verify")
@log_option
@click.option(
    "--against",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A checkpoint (from `clerk-audit checkpoint`) the log must still extend.",
)
@click.option(
    "--public-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"The key a signed checkpoint must be signed with (default: that of {SIGNING_KEY_ENV}).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes checking ranges of the log side by side (default: one per core, for "
    "logs of more than 100,000 events per core).",
)
def command(
    db_path: LogLocation, against: Path | None, public_key: Path | None, workers: int | None
) -> None:
    """Recompute the log's hash chain; exit 1 naming the first position that breaks it.

    Every body must match its body_sha256 and every chain value must follow from the one
    before; a body replaced by `clerk-audit redact` must be the one the chained
    clerk-audit.redaction event that lists it recorded. With --against, the log must also
    still extend a saved checkpoint, which catches a truncated or rewritten log.

    \b
    Example:
        clerk-audit verify --db data/audit.db
        clerk-audit verify --against checkpoints/checkpoint-000000100000.json
    """
    checkpoint, signed = None, ""
    if against is not None:
        checkpoint = read_checkpoint(against)
        key_file = public_key or (Path(os.environ[SIGNING_KEY_ENV])
                                  if os.environ.get(SIGNING_KEY_ENV) else None)  # fmt: skip
        signed = check_signature(checkpoint, load_public_key(key_file) if key_file else None)
    report, redacted = _verify(db_path, workers)
    if report.broken is not None:
        broken = report.broken
        _fail(db_path, broken.position,
              f"chain broken at position {broken.position}: {broken.problem}")  # fmt: skip
    extends = f"{_against(db_path, checkpoint, report)}; {signed}" if checkpoint else None
    record(db_path, "verify", report.position, report.head, True, extends)
    click.echo(f"verified {report.events} events: the chain is intact up to position "
               f"{report.position}, head {report.head}")  # fmt: skip
    if redacted.positions:
        click.echo(f"{len(redacted.positions)} events redacted by {redacted.redactions} "
                   "recorded redactions; their bodies are the ones recorded")  # fmt: skip
    if extends is not None:
        click.echo(extends)
