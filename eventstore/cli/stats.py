"""`clerk-audit stats` (placeholder until its issue lands)."""

from __future__ import annotations

import click


@click.command("stats")
def command() -> None:
    """Not built yet."""
    raise click.ClickException("stats is not built yet")
