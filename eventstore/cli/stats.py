"""``clerk-audit stats``: what the store holds."""

from __future__ import annotations

from pathlib import Path

import click

from eventstore.cli.options import db_option
from eventstore.db import open_store
from eventstore.stats import store_stats


@click.command("stats")
@db_option
def command(db_path: Path) -> None:
    """Count events, deliveries by outcome, quarantined events and projection rows.

    \b
    Example:
        clerk-audit stats --db data/audit.db
    """
    conn = open_store(db_path)
    try:
        stats = store_stats(conn)
    finally:
        conn.close()
    click.echo(f"events                      {stats.events:>10}  (log position {stats.position})")
    click.echo(f"quarantined events          {stats.quarantined:>10}")
    click.echo(f"deliveries                  {sum(stats.deliveries.values()):>10}")
    for outcome, count in stats.deliveries.items():
        click.echo(f"  {outcome:<26}{count:>10}")
    click.echo("projection rows")
    for table, count in stats.tables.items():
        click.echo(f"  {table:<26}{count:>10}")
