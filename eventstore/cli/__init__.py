"""The ``clerk-audit`` command line: one click group, one module per command."""

from __future__ import annotations

import sys
from typing import Any

import click

from eventstore.errors import AuditStoreError


class AuditGroup(click.Group):
    """Prints our errors as one line on stderr and exits 1, instead of a traceback."""

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


def _register() -> None:
    from eventstore.cli import datasette, rebuild, send, serve, stats

    for module in (serve, rebuild, send, datasette, stats):
        cli.add_command(module.command)


_register()
