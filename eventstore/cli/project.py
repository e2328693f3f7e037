"""``clerk-audit project``: bring the projections up to the log's head, or follow it."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import click

from eventstore.cli.options import log_option, projections_option
from eventstore.location import LogLocation
from eventstore.paths import projections_path
from eventstore.settings import LOG_FORMAT
from projections import Projector, ensure_current
from projections.follow import follow


def _stop_on_signals(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)


@click.command("project")
@log_option
@projections_option
@click.option("--follow", "keep_following", is_flag=True, help="Keep following the log.")
@click.option("--parent", type=int, default=None, hidden=True, help="Stop when it exits.")
def command(
    db_path: LogLocation, projections_db: Path | None, keep_following: bool, parent: int | None
) -> None:
    """Apply the log's new events to the projections (created if missing), then exit; with
    --follow keep applying them as they arrive, until SIGTERM or Ctrl-C.

    \b
    Example:
        clerk-audit project --db data/audit.db
        clerk-audit project --follow
    """
    target = projections_path(db_path, projections_db)
    if keep_following:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        stop = threading.Event()
        _stop_on_signals(stop)
        follow(db_path, target, stop, parent)
        return
    started = time.perf_counter()
    ensure_current(db_path, target)
    projector = Projector(db_path, target)
    try:
        handled = projector.run()
        position = projector.head()
    finally:
        projector.close()
    click.echo(f"projected {handled} events up to position {position} "
               f"in {time.perf_counter() - started:.2f} s")  # fmt: skip
