"""``clerk-audit tail``: the log after a position, one JSON object per line (CONTRACT §9)."""

from __future__ import annotations

import sys
import time
from contextlib import closing, suppress

import click

from eventstore.cli.options import log_option
from eventstore.feed import Filters, event_json, iter_events
from eventstore.location import LogLocation, open_log_reader

FOLLOW_POLL_S = 0.2
"""How often ``--follow`` looks for new events once it has caught up."""


@click.command("tail")
@log_option
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True,
              help="Start after this log position (the last one you handled).")  # fmt: skip
@click.option("--follow", "keep_following", is_flag=True,
              help="Keep printing events as they arrive, until Ctrl-C or SIGTERM.")  # fmt: skip
@click.option("--type", "types", multiple=True, metavar="PREFIX",
              help="Only types starting with PREFIX (e.g. user.); repeatable.")  # fmt: skip
def command(db_path: LogLocation, after: int, keep_following: bool, types: tuple[str, ...]) -> None:
    """Print the log's events after --after, in log order, one JSON object per line: the
    events columns by name and the body as the event's JSON (the same objects as GET /events
    and export). The cursor to resume from is each line's "position".

    \b
    Example:
        clerk-audit tail --after 1200 --type user. --follow | jq -c '.body.data.id'
    """
    filters = Filters(types)
    out = sys.stdout.buffer
    with closing(open_log_reader(db_path)) as conn, suppress(KeyboardInterrupt, BrokenPipeError):
        while True:
            for page in iter_events(conn, after, filters):
                out.write(b"".join(event_json(row) + b"\n" for row in page.rows))
                out.flush()
                after = page.next
            if not keep_following:
                return
            time.sleep(FOLLOW_POLL_S)
