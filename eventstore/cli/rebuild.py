"""`clerk-audit rebuild` (placeholder until its issue lands)."""

from __future__ import annotations

import click


@click.command("rebuild")
def command() -> None:
    """Not built yet."""
    raise click.ClickException("rebuild is not built yet")
