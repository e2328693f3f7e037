"""``clerk-audit state --as-of TIME``: the projected state as it was at a time, from the log."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import click
import orjson

from eventstore.cli.options import log_option, projections_option
from eventstore.db import open_reader
from eventstore.errors import ConfigurationError
from eventstore.location import LogLocation, open_log_reader
from eventstore.paths import projections_path
from projections.asof import organization_state, overview, parse_time, user_state
from projections.tables import checkpoint


@click.command("state")
@log_option
@projections_option
@click.option("--as-of", "as_of", required=True, help="The moment, ISO-8601 (UTC if no offset).")
@click.option("--user", "user_id", default=None, help="One user's state (user_…).")
@click.option("--organization", "organization_id", default=None, help="One organization (org_…).")
def command(
    db_path: LogLocation, projections_db: Path | None, as_of: str, user_id: str | None,
    organization_id: str | None,
) -> None:  # fmt: skip
    """Print as JSON the state at a moment: a user (their snapshot, ban, memberships and
    roles), an organization (its snapshot and members with roles), or with neither how many
    users and organizations existed, memberships held and users were banned. Read only; as
    up to date as the projections (projected_position).

    \b
    Example:
        clerk-audit state --as-of 2026-08-04T12:00:00Z --organization org_2abc
        clerk-audit state --as-of 2026-08-04 --user user_2abc
    """
    if user_id and organization_id:
        raise ConfigurationError("give --user or --organization, not both")
    at = parse_time(as_of)
    projections = projections_path(db_path, projections_db)
    with closing(open_reader(projections)) as conn, closing(open_log_reader(db_path)) as log:
        conn.execute("BEGIN")  # one snapshot of the projections; what they list is in the log
        if user_id:
            state = user_state(conn, log, user_id, at)
        elif organization_id:
            state = organization_state(conn, log, organization_id, at)
        else:
            state = overview(conn, at)
        state["projected_position"] = checkpoint(conn)
    click.echo(orjson.dumps(state, option=orjson.OPT_INDENT_2).decode())
