"""``clerk-audit import``: an export's events into this store, idempotently (CONTRACT §9)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from eventstore.cli.options import log_option
from eventstore.location import LogLocation
from eventstore.transfer import ImportResult, import_file


def _progress(result: ImportResult) -> None:
    click.echo(f"\rread {result.lines} lines: {result.imported} imported", err=True, nl=False)


@click.command("import")
@log_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def command(db_path: LogLocation, file: Path) -> None:
    """Append the events of FILE (written by `clerk-audit export`, gzip or not; - for
    standard input) to the log,
    creating it if needed. Events already stored are skipped, so running it again adds
    nothing; received_at and the other columns are kept; each appended event is listed in
    the log's imported_events table. A line that is cut short, not JSON, or whose body does
    not match its body_sha256 is refused with its line number: the lines before it are
    imported, nothing from it on.

    \b
    Example:
        clerk-audit import --db data/restored.db backups/audit-2026-08.ndjson.gz
        clerk-audit export | CLERK_AUDIT_DB=postgresql://... clerk-audit import -
    """
    tty = sys.stderr.isatty()
    try:
        result = import_file(db_path, file, _progress if tty else None)
    finally:
        if tty:
            click.echo("", err=True)
    span = f" (positions {result.first}..{result.last})" if result.imported else ""
    click.echo(f"read {result.lines} events: {result.imported} imported{span}, "
               f"{result.skipped} already stored")  # fmt: skip
