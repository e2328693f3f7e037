"""`clerk-audit serve` (placeholder until its issue lands)."""

from __future__ import annotations

import click


@click.command("serve")
def command() -> None:
    """Not built yet."""
    raise click.ClickException("serve is not built yet")
