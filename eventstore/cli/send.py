"""`clerk-audit send` (placeholder until its issue lands)."""

from __future__ import annotations

import click


@click.command("send")
def command() -> None:
    """Not built yet."""
    raise click.ClickException("send is not built yet")
