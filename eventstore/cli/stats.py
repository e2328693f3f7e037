"""``clerk-audit stats``: what the log holds and how far the projections follow it."""

from __future__ import annotations

from pathlib import Path

import click

from eventstore.cli.options import log_option, projections_option
from eventstore.location import LogLocation
from eventstore.paths import projections_path
from eventstore.stats import read_log_stats
from projections.progress import projection_rows, read_progress


@click.command("stats")
@log_option
@projections_option
def command(db_path: LogLocation, projections_db: Path | None) -> None:
    """Count events, deliveries by outcome, quarantined events, projection rows, the
    projections' lag behind the log and their errors.

    \b
    Example:
        clerk-audit stats --db data/audit.db
    """
    stats = read_log_stats(db_path)
    target = projections_path(db_path, projections_db)
    progress = read_progress(target)
    click.echo(f"events                      {stats.events:>10}  (log position {stats.position})")
    click.echo(f"quarantined events          {stats.quarantined:>10}")
    click.echo(f"deliveries                  {sum(stats.deliveries.values()):>10}")
    for outcome, count in stats.deliveries.items():
        click.echo(f"  {outcome:<26}{count:>10}")
    click.echo(f"projected up to position    {progress.position:>10}  "
               f"(lag {max(0, stats.position - progress.position)} events)")  # fmt: skip
    click.echo(f"projection errors           {progress.errors:>10}")
    click.echo("projection rows")
    for table, count in projection_rows(target).items():
        click.echo(f"  {table:<26}{count:>10}")
