"""`clerk-audit datasette` (placeholder until its issue lands)."""

from __future__ import annotations

import click


@click.command("datasette")
def command() -> None:
    """Not built yet."""
    raise click.ClickException("datasette is not built yet")
