"""``clerk-audit export``: the log as NDJSON, every column, bodies byte-exact (CONTRACT §9)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from eventstore.cli.options import log_option
from eventstore.location import LogLocation
from eventstore.transfer import export_log


def _progress(count: int) -> None:
    click.echo(f"\rexported {count} events", err=True, nl=False)


@click.command("export")
@log_option
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True,
              help="Only events after this log position (for increments).")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write here (gzip when the name ends in .gz); default stdout.")  # fmt: skip
def command(db_path: LogLocation, after: int, out: Path | None) -> None:
    """Write the log's events as NDJSON: one JSON object per line with every events column
    and the body byte-exact ("body" as the event's own JSON text; "body_text" or
    "body_base64" for a body that is not one line of JSON). The file appears only once it is
    complete. `clerk-audit import` reads it back into another store.

    \b
    Example:
        clerk-audit export --out backups/audit-2026-08.ndjson.gz
        clerk-audit export --after 125000 --out backups/audit-increment.ndjson
    """
    tty = out is not None and sys.stderr.isatty()
    result = export_log(db_path, out, after, _progress if tty else None)
    if tty:
        click.echo("", err=True)
    span = f" (positions {result.first}..{result.last})" if result.events else ""
    click.echo(f"exported {result.events} events{span} to {out or 'stdout'}", err=True)
