"""Redactions and the projections: finding a user's events, and re-projecting redacted ones.

``clerk-audit redact`` finds the events to redact through the projections' indexes, never by a
scan of the log (:func:`find_events`). When the projector meets the ``clerk-audit.redaction``
event that records a redaction, it re-projects the positions that event lists from their
redacted bodies, in the same transaction as the rest of its batch (:func:`reproject`):

* their ``audit_timeline`` rows are replaced;
* every entity row that one of those events gave (its ``event_id``) is rewritten from the
  redacted body, with the same version key and its own ``deleted`` and ``deleted_at``.

A redaction keeps every version key (``eventstore.redaction``), so the winners do not change
and the result is what a rebuild of the redacted log gives. The transaction runs with
``PRAGMA secure_delete = ON`` and the projections' WAL is truncated after it
(:func:`erase_replaced`), so the replaced bytes are gone from the file, not just unreachable.
The full-text index lets the old words go for good as well (``projections.search.forgetting``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from eventstore.engine import sqlite3
from eventstore.jsondoc import load_json
from eventstore.redaction import (
    REDACTION_TYPE,
    Subject,
    in_chunks,
    read_bodies,
    subject_values,
    truncate_wal,
)
from eventstore.sql import Sql
from projections.apply import insert_timeline
from projections.entities import COMMON_COLUMNS, EntitySpec
from projections.failures import Failure, failure
from projections.fold import (
    Claim,
    LoggedEvent,
    VersionRow,
    claim,
    entity_row,
    parse_logged,
    timeline_row,
    version_row,
)
from projections.history import insert_versions, rederive
from projections.schema import ERRORS, TIMELINE, TIMELINE_COLUMNS
from projections.search import forgetting

_SUMMARY = TIMELINE_COLUMNS.index("summary")
PROJECTIONS_SECURE_DELETE = "ON"
"""The projector zeroes every page it frees, not only bytes inside pages (the log's ``FAST``):
the timeline's full-text index merges its segments as it grows, and a freed segment page would
otherwise keep old words (names, addresses) beyond the reach of a redaction."""

_BY_ADDRESS = (
    ("organization_invitations", "email_address", "organizationInvitation"),
    ("waitlist_entries", "email_address", "waitlistEntry"),
    ("emails", "to_email_address", "email"),
)
_BY_NUMBER = (("sms_messages", "to_phone_number", "sms"),)
_MENTIONS = {"organization"}
"""Object types whose timeline ``user_id`` is not the subject of the event (the creator of an
organization): their events only mention the user."""


def _in(values: Sequence[object]) -> str:
    return f"({', '.join('?' * len(values))})"


def _positions_of(conn: sqlite3.Connection, object_type: str, ids: Iterable[str]) -> set[int]:
    found: set[int] = set()
    for entity_id in sorted(set(ids)):
        found.update(p for (p,) in conn.execute(
            f"SELECT position FROM {TIMELINE} WHERE object_id = ? AND object_type = ?",
            (entity_id, object_type),
        ))  # fmt: skip
    return found


def _ids(conn: sqlite3.Connection, table: str, column: str, values: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for part in in_chunks(values):
        found.update(i for (i,) in conn.execute(
            f"SELECT id FROM {table} WHERE {column} IN {_in(part)}", part
        ))  # fmt: skip
    return found


def find_events(
    conn: sqlite3.Connection, log: Sql, user_id: str
) -> tuple[Subject, set[int], set[int]]:
    """The user's :class:`Subject` and the positions of the events about them and of those
    that only mention them, from projections that are up to date (``conn``) and the log.

    About them: their user events; the events whose timeline ``user_id`` is theirs (sessions,
    memberships, invitations, emails, SMS, billing objects); invitations, waitlist entries and
    emails to one of their email addresses and SMS to one of their phone numbers (the
    addresses and numbers of every snapshot of their user events). Mentioning them: the
    organizations they created and the invitations they sent. Each through an index.
    """
    own = _positions_of(conn, "user", [user_id])
    about, mentions, sessions = set(own), set[int](), set[int]()
    for position, object_type in conn.execute(
        f"SELECT position, object_type FROM {TIMELINE} WHERE user_id = ?", (user_id,)
    ):
        (mentions if object_type in _MENTIONS else about).add(position)
        if object_type == "session":
            sessions.add(position)
    documents = []
    for _, _, body, status in read_bodies(log, own | sessions):
        if status == "ok":
            try:
                documents.append(load_json(body))
            except ValueError:
                continue
    subject = subject_values(user_id, documents)
    for table, column, object_type in _BY_ADDRESS:
        about |= _positions_of(conn, object_type, _ids(conn, table, column, subject.emails))
    for table, column, object_type in _BY_NUMBER:
        about |= _positions_of(conn, object_type, _ids(conn, table, column, subject.phones))
    sent = _ids(conn, "organization_invitations", "inviter_id", [user_id])
    mentions |= _positions_of(conn, "organizationInvitation", sent)
    return subject, about, mentions - about


def listed_positions(events: Sequence[LoggedEvent]) -> list[int]:
    """The positions the ``clerk-audit.redaction`` events among ``events`` redacted."""
    listed: set[int] = set()
    for event in events:
        if event.event_type == REDACTION_TYPE and event.data is not None:
            positions = event.data.get("positions")
            for position in positions if isinstance(positions, list) else ():
                if type(position) is int and 0 < position < event.position:
                    listed.add(position)
    return sorted(listed)


@cache
def _rewrite_sql(spec: EntitySpec) -> str:
    replaced = (*spec.column_names, "created_at", "updated_at", "data")
    return (
        f"UPDATE {spec.table} SET {', '.join(f'{c} = ?' for c in replaced)} "
        "WHERE id = ? AND event_id = ? AND version_ms = ? AND version_rank = ?"
    )


def _rewrite(spec: EntitySpec, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The parameters of :func:`_rewrite_sql` from an entity row (``fold.entity_row``)."""
    flattened = row[1 : 1 + len(spec.columns)]
    common = dict(zip(COMMON_COLUMNS, row[1 + len(spec.columns) :], strict=True))
    return (
        *flattened, common["created_at"], common["updated_at"], common["data"], row[0],
        common["event_id"], common["version_ms"], common["version_rank"],
    )  # fmt: skip


def reproject(
    conn: sqlite3.Connection,
    log: Sql,
    positions: Sequence[int],
    instance: str | None = None,
) -> list[Failure]:
    """Re-project ``positions`` (already projected) from their bodies in ``log``, inside the
    caller's transaction on ``conn``, with ``secure_delete`` on for it. Returns the events
    that could not be projected (their old rows are gone either way)."""
    conn.execute("PRAGMA secure_delete = ON")
    with forgetting(conn, positions):
        for part in in_chunks(positions):
            conn.execute(f"DELETE FROM {TIMELINE} WHERE position IN {_in(part)}", part)
            conn.execute(f"DELETE FROM {ERRORS} WHERE position IN {_in(part)}", part)
        return _project_again(conn, log, positions, instance)


def _project_again(
    conn: sqlite3.Connection, log: Sql, positions: Sequence[int], instance: str | None
) -> list[Failure]:
    """The rows of ``positions`` from their (redacted) bodies: timeline rows inserted, the
    entity rows they gave rewritten, their versions replaced and the history derived again."""
    failures: list[Failure] = []
    parsed: list[tuple[LoggedEvent, Claim | None]] = []
    for position, event_id, body, status in read_bodies(log, positions):
        if status != "ok":
            continue
        try:
            event = parse_logged(position, event_id, body, instance=instance)
            if event is None:
                failures.append((position, event_id, "the stored body is not an event"))
                continue
            parsed.append((event, claim(event)))
        except Exception as error:  # as in the projector: only this event is left out
            failures.append(failure(position, event_id, error))
    stored = _stored_event_ids(conn, [found for _, found in parsed if found is not None])
    timeline: list[tuple[Any, ...]] = []
    rewrites: dict[EntitySpec, list[tuple[Any, ...]]] = {}
    versions: list[VersionRow] = []
    for event, found in parsed:
        gave = found is not None and stored.get((found.spec, found.entity_id)) == event.event_id
        try:
            row = timeline_row(event)
            entity = entity_row(found, event) if found is not None and gave else None
            version = version_row(found, event, row[_SUMMARY]) if found is not None else None
        except Exception as error:
            failures.append(failure(event.position, event.event_id, error))
            continue
        timeline.append(row)
        if found is not None and entity is not None:
            rewrites.setdefault(found.spec, []).append(_rewrite(found.spec, entity))
        if version is not None:
            versions.append(version)
    insert_timeline(conn, timeline)
    for spec, rows in rewrites.items():
        conn.executemany(_rewrite_sql(spec), rows)
    insert_versions(conn, versions)  # same keys: the redacted fields replace the old ones
    rederive(conn, ((v[0], v[1]) for v in versions))
    return failures


def _stored_event_ids(
    conn: sqlite3.Connection, claims: Sequence[Claim]
) -> dict[tuple[EntitySpec, str], str]:
    """The ``event_id`` of each claimed entity's stored row: only the event that gave it is
    turned into a row again (a user's 1,000 updates rewrite one row, not a thousand)."""
    wanted: dict[EntitySpec, set[str]] = {}
    for found in claims:
        wanted.setdefault(found.spec, set()).add(found.entity_id)
    stored: dict[tuple[EntitySpec, str], str] = {}
    for spec, ids in wanted.items():
        for part in in_chunks(sorted(ids)):
            for entity_id, event_id in conn.execute(
                f"SELECT id, event_id FROM {spec.table} WHERE id IN {_in(part)}", part
            ):
                stored[spec, entity_id] = event_id
    return stored


def erase_replaced(conn: sqlite3.Connection) -> bool:
    """After the commit of a redaction's re-projection: move the WAL into the file and
    truncate it, and set ``secure_delete`` back to the projector's setting. Returns whether
    the checkpoint completed (readers of older snapshots can hold it back)."""
    try:
        return truncate_wal(conn)
    finally:
        conn.execute(f"PRAGMA secure_delete = {PROJECTIONS_SECURE_DELETE}")
