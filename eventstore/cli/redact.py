"""``clerk-audit redact``: erase one Clerk user's personal data from the log and the projections
(CONTRACT §8; the redacted form and the record are described in ``eventstore.redaction``)."""

from __future__ import annotations

import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import click

from eventstore.backends import log_transaction, open_log
from eventstore.cli.options import log_option, projections_option
from eventstore.db import connect
from eventstore.engine import sqlite3
from eventstore.errors import ConfigurationError, StoreError
from eventstore.location import LogLocation
from eventstore.log import log_position
from eventstore.paths import projections_path
from eventstore.redaction import Redaction, default_actor, redact_positions, truncate_wal
from eventstore.settings import configured_instance
from eventstore.sql import Sql
from projections.files import target
from projections.projector import Projector
from projections.rebuild import ensure_current
from projections.redactions import find_events


@dataclass(frozen=True, slots=True)
class Outcome:
    redaction: Redaction
    log_truncated: bool
    """Whether the log's WAL was checkpointed and truncated after the commit."""
    projections_truncated: bool


def redact_user(
    db_path: LogLocation, projections: Path, user_id: str, *, reason: str, actor: str | None = None
) -> Outcome:
    """Redact ``user_id`` in the log at ``db_path`` and bring the projections up to date.

    The projections are brought to the log's head first (outside the log's write lock), then
    again inside it for what arrived meanwhile, so no event of the user is missed; the events
    are found through the projections' indexes, and redacted, recorded and committed in one
    transaction of the log (``secure_delete`` on). The log's WAL is then truncated, and the
    projector applies the redaction to the projections.
    """
    instance = configured_instance()
    ensure_current(db_path, projections, instance)
    projector = Projector(db_path, projections, instance=instance)
    try:
        projector.run()
        with closing(open_log(db_path, create=False)) as log:
            if isinstance(log, sqlite3.Connection):
                log.execute("PRAGMA secure_delete = ON")
            with log_transaction(log, db_path):
                projector.run(log_position(log))  # what arrived since: the lock holds ingest
                current = target(projections)
                if current is None:
                    raise ConfigurationError(f"no projections at {projections}")
                with closing(projector_reader(current)) as conn:
                    subject, about, mentions = find_events(conn, log, user_id)
                redaction = redact_positions(
                    log, subject, about, mentions, actor=actor or default_actor(), reason=reason
                )
            log_truncated = _erase_old_versions(log) if redaction.event_id else True
        projector.run()
        projections_truncated = True
        if redaction.event_id and (current := target(projections)) is not None:
            with closing(projector_reader(current)) as conn:
                projections_truncated = truncate_wal(conn)
    finally:
        projector.close()
    return Outcome(redaction, log_truncated, projections_truncated)


def _erase_old_versions(log: Sql) -> bool:
    """After the commit, remove what the replaced bodies left behind: SQLite's write-ahead
    log (truncated), PostgreSQL's old row versions (``VACUUM``; its WAL, backups and replicas
    are the database's to expire). Returns whether that completed."""
    if isinstance(log, sqlite3.Connection):
        return truncate_wal(log)
    try:
        log.execute("VACUUM events")
        log.execute("VACUUM deliveries")
    except StoreError:
        return False
    return True


def projector_reader(file: Path) -> sqlite3.Connection:
    """A connection to a projections generation (reads, and the WAL checkpoint)."""
    return connect(file, synchronous="NORMAL")


@click.command("redact")
@click.option("--user", "user_id", required=True, help="The Clerk user id (user_...).")
@click.option("--reason", required=True, help="Why (recorded in the log; no personal data).")
@click.option("--actor", default=None, help="Who runs it (recorded; default: the OS user).")
@log_option
@projections_option
def command(
    user_id: str,
    reason: str,
    actor: str | None,
    db_path: LogLocation,
    projections_db: Path | None,
) -> None:
    """Erase one Clerk user's personal data from the log and the projections.

    Their user events, and the sessions, memberships, invitations, emails, SMS and billing
    objects that name them by id, email address or phone number, keep their ids, times and
    types, but lose names, addresses, numbers, IPs, user agents, metadata and message
    contents; the deliveries of those events lose their address and user agent. A
    clerk-audit.redaction event records who ran it, when, why and which positions, and
    `clerk-audit verify` keeps passing. Running it again for the same user changes nothing.

    \b
    Example:
        clerk-audit redact --user user_2abc --reason "GDPR Art. 17 request #1234"
    """
    if not user_id.strip() or not reason.strip():
        click.echo("clerk-audit: --user and --reason must not be empty", err=True)
        sys.exit(2)
    started = time.perf_counter()
    outcome = redact_user(
        db_path, projections_path(db_path, projections_db), user_id.strip(),
        reason=reason.strip(), actor=actor,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    done = outcome.redaction
    if done.event_id is None:
        click.echo(f"nothing to redact for {user_id} ({elapsed:.2f} s)")
        return
    click.echo(f"redacted {len(done.positions)} events of {user_id} and {done.deliveries} "
               f"deliveries, recorded as {done.event_id} at position {done.position} "
               f"({elapsed:.2f} s)")  # fmt: skip
    for name, truncated in (("log", outcome.log_truncated),
                            ("projections", outcome.projections_truncated)):  # fmt: skip
        if not truncated:
            click.echo(f"clerk-audit: warning: the {name} file's write-ahead log could not be "
                       "truncated (a reader holds it); the replaced bytes may stay in it until "
                       "the next checkpoint", err=True)  # fmt: skip
