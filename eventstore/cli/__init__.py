"""The ``clerk-audit`` command line: one click group, one module per command.

Commands are imported when they run (``clerk-audit rebuild`` need not load svix or uvicorn).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from eventstore.errors import AuditStoreError

COMMANDS = {
    "serve": "eventstore.cli.serve",
    "project": "eventstore.cli.project",
    "rebuild": "eventstore.cli.rebuild",
    "send": "eventstore.cli.send",
    "datasette": "eventstore.cli.datasette",
    "stats": "eventstore.cli.stats",
    "verify": "eventstore.cli.verify",
    "checkpoint": "eventstore.cli.checkpoint",
    "tail": "eventstore.cli.tail",
    "export": "eventstore.cli.export",
    "import": "eventstore.cli.import_",
    "backfill": "eventstore.cli.backfill",
    "redact": "eventstore.cli.redact",
    "state": "eventstore.cli.state",
}


class AuditGroup(click.Group):
    """Loads each command's module on demand, and prints our errors as one line on stderr
    (exit 1) instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        command: click.Command = importlib.import_module(module).command
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AuditStoreError as error:
            click.echo(f"clerk-audit: error: {error}", err=True)
            sys.exit(1)


@click.group(cls=AuditGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clerk-audit")
def cli() -> None:
    """clerk-audit: an append-only audit store for Clerk webhooks.

    \b
    Example:
        clerk-audit serve --db data/audit.db
    """
