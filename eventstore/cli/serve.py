"""``clerk-audit serve``: the ingest server under uvicorn."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import click

from eventstore.app import create_app
from eventstore.backends import prepare_log
from eventstore.checkpointer import Checkpointer
from eventstore.cli.options import log_option, projections_option
from eventstore.cli.stopping import unwinding_on_stop
from eventstore.http_server import run_server
from eventstore.location import LogLocation
from eventstore.paths import projections_path
from eventstore.settings import LOG_FORMAT, checkpoint_policy, configured_instance, load_settings
from eventstore.supervisor import ProjectorProcess


def _say(message: str) -> None:
    click.echo(f"clerk-audit: {message}", err=True)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@log_option
@projections_option
@click.option(
    "--secret",
    help="Signing secret(s), overriding CLERK_WEBHOOK_SIGNING_SECRET (for tests; a flag "
    "shows in the process list, so prefer the environment variable).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="debug also logs every accepted delivery.",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write a checkpoint of the chain head here every CLERK_AUDIT_CHECKPOINT_EVERY events "
    "or CLERK_AUDIT_CHECKPOINT_MINUTES (env CLERK_AUDIT_CHECKPOINT_DIR).",
)
@click.option(
    "--projector/--no-projector",
    default=True,
    show_default=True,
    help="Run the projector as a child process. With several servers on one PostgreSQL log, "
    "run one `clerk-audit project --follow` of its own instead.",
)
def command(
    host: str,
    port: int,
    db_path: LogLocation,
    projections_db: Path | None,
    secret: str | None,
    log_level: str,
    checkpoint_dir: Path | None,
    projector: bool,
) -> None:
    """Run the ingest server (POST /webhooks/clerk, GET /healthz) and the projector.

    The log is created if it does not exist (its folder must). The projector runs in a process
    of its own, restarted if it dies. With no signing secret, a development secret is created
    once beside the log.

    \b
    Example:
        CLERK_WEBHOOK_SIGNING_SECRET='whsec_...' clerk-audit serve --port 8000
    """
    projections = projections_path(db_path, projections_db)
    settings = load_settings(db_path, projections, secret=secret, announce=_say)
    policy = checkpoint_policy(checkpoint_dir)
    instance = configured_instance()  # a malformed one stops here, not in the projector
    prepare_log(db_path, settings.busy_timeout_ms)
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    app = create_app(settings)
    _say(f"log {db_path}, projections {projections}; ingest route POST /webhooks/clerk")
    if instance is not None:
        _say(f"projecting the events of instance {instance} only (CLERK_AUDIT_INSTANCE_ID)")
    checkpoints = Checkpointer(db_path, policy) if policy else nullcontext()
    projecting = ProjectorProcess(db_path, projections) if projector else nullcontext()
    with unwinding_on_stop(), projecting, checkpoints:
        run_server(app, host=host, port=port, log_level=log_level)
