"""``clerk-audit rebuild``: recompute every projection from the log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from eventstore.cli.options import log_option, projections_option
from eventstore.location import LogLocation, open_log_reader
from eventstore.log import log_position
from eventstore.paths import projections_path
from projections import RebuildResult, rebuild


def _report(result: RebuildResult, seconds: float, check: bool) -> None:
    verb = "checked" if check else "rebuilt"
    rate = result.events / seconds if seconds > 0 else 0.0
    click.echo(f"{verb} {result.events} events up to position {result.position} "
               f"in {seconds:.2f} s ({rate:,.0f} events/s)")  # fmt: skip
    for table, rows in result.rows.items():
        click.echo(f"  {table:<26} {rows:>10} rows")
    click.echo(f"state digest {result.digest}")


@click.command("rebuild")
@log_option
@projections_option
@click.option(
    "--check",
    is_flag=True,
    help="Rebuild aside and compare with the live projections; exit 1 on any difference.",
)
def command(db_path: LogLocation, projections_db: Path | None, check: bool) -> None:
    """Rebuild every projection from the log into a new file, swapped in atomically.

    The server may keep running: the log is only read. Readers (Datasette, the server's
    projector) see the old projections until the swap and the new ones after it.

    \b
    Example:
        clerk-audit rebuild --db data/audit.db
        clerk-audit rebuild --check
    """
    conn = open_log_reader(db_path)
    total = log_position(conn)
    conn.close()
    target = projections_path(db_path, projections_db)
    started = time.perf_counter()
    if sys.stderr.isatty():
        with click.progressbar(length=total, label="events", file=sys.stderr) as bar:
            result = rebuild(db_path, target, check=check, progress=bar.update)
    else:
        result = rebuild(db_path, target, check=check)
    _report(result, time.perf_counter() - started, check)
    if result.differences:
        click.echo(f"clerk-audit: live projections differ from a rebuild in: "
                   f"{', '.join(result.differences)}", err=True)  # fmt: skip
        sys.exit(1)
