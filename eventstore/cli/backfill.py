"""``clerk-audit backfill``: snapshots of what Clerk holds, from its Backend API (§9)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from eventstore.backfill import (
    DEFAULT_API_URL,
    RESOURCES,
    SECRET_KEY_ENV,
    Backfill,
    BackfillResult,
    ClerkAPI,
    GapReport,
    Gaps,
    state_path,
)
from eventstore.cli.options import log_option, projections_option
from eventstore.errors import ConfigurationError
from eventstore.location import LogLocation
from eventstore.paths import projections_path

LISTED = 20
"""Ids listed per kind of gap; the rest are counted."""


def _say(message: str) -> None:
    click.echo(f"clerk-audit: {message}", err=True)


def _progress(result: BackfillResult) -> None:
    parts = ", ".join(f"{label} {c.read} read/{c.new} new" for label, c in result.counts.items())
    click.echo(f"\r{parts}", err=True, nl=False)


def _gap_lines(label: str, gaps: Gaps) -> list[str]:
    lines = [f"{label}: {gaps.in_clerk} in Clerk, {len(gaps.missing)} missing from the "
             f"projections, {len(gaps.newer)} newer in Clerk"]  # fmt: skip
    for kind, ids in (("missing", gaps.missing), ("newer", gaps.newer)):
        lines += [f"  {kind} {object_id}" for object_id in ids[:LISTED]]
        if len(ids) > LISTED:
            lines.append(f"  ... and {len(ids) - LISTED} more {kind}")
    return lines


@click.command("backfill")
@log_option
@projections_option
@click.option("--api-url", default=DEFAULT_API_URL, show_default=True,
              help="Clerk's Backend API (another URL for tests or a proxy).")  # fmt: skip
@click.option("--dry-run", is_flag=True,
              help="Store nothing: report what Clerk has that the projections lack or hold "
              "an older version of.")  # fmt: skip
def command(db_path: LogLocation, projections_db: Path | None, api_url: str, dry_run: bool) -> None:
    """Append a snapshot event for every user, organization, membership and invitation in
    Clerk (its Backend API, with CLERK_SECRET_KEY), marked as backfilled: types such as
    user.backfilled, event ids backfill_<id>_<updated_at>. The ordering rule decides as for
    any event (a webhook with a newer updated_at wins); running it again adds nothing but
    what changed in Clerk since. An interrupted backfill resumes where it stopped.

    \b
    Example:
        CLERK_SECRET_KEY=sk_live_... clerk-audit backfill --dry-run
        CLERK_SECRET_KEY=sk_live_... clerk-audit backfill
    """
    key = os.environ.get(SECRET_KEY_ENV, "").strip()
    if not key:
        raise ConfigurationError(
            f"{SECRET_KEY_ENV} is not set (the instance's secret key, sk_live_... or "
            "sk_test_..., from the Clerk Dashboard)"
        )
    projections = projections_path(db_path, projections_db)
    api = ClerkAPI(key, api_url, say=_say)
    try:
        if dry_run:
            report = GapReport(projections, api).run()
            for resource in RESOURCES:
                click.echo("\n".join(_gap_lines(resource.label, report[resource.label])))
            return
        tty = sys.stderr.isatty()
        saved = state_path(db_path, projections)
        runner = Backfill(db_path, saved, api, _progress if tty else None)
        if saved.exists():
            _say(f"resuming the backfill saved in {saved}")
        try:
            result = runner.run()
        finally:
            if tty:
                click.echo("", err=True)
    finally:
        api.close()
    for label, counts in result.counts.items():
        click.echo(f"{label:<12} {counts.read:>8} read {counts.new:>8} new events")
