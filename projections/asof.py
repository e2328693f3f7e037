"""The state as it was at a moment (``clerk-audit state --as-of``), from the log.

An entity's state at a time is the §6 winner among its events whose time (``occurred_at``) is
at or before it, deleted if one of those is a delete: the same rule as the projections, over
a prefix of the entity's events. The events are found through the timeline's index on
``object_id`` and their bodies read from the log (SQLite or PostgreSQL) by position.
Memberships and bans at that time come from the validity intervals
(``projections.history``), derived from the same log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from eventstore.engine import sqlite3
from eventstore.errors import ConfigurationError
from eventstore.redaction import read_bodies
from eventstore.sql import Sql
from eventstore.timefmt import iso_ms
from projections.entities import BY_OBJECT_TYPE, COMMON_COLUMNS
from projections.fold import Claim, LoggedEvent, claim, entity_row, parse_logged
from projections.schema import TIMELINE

State = dict[str, Any]


def parse_time(text: str) -> str:
    """``text`` (ISO-8601: a date, or a time with ``Z`` or an offset; naive means UTC) as the
    store writes times, to compare with them."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"--as-of {text!r} is not an ISO-8601 time (e.g. 2026-08-04T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_ms(int(moment.timestamp() * 1000))


def _events(
    conn: sqlite3.Connection, log: Sql, object_type: str, entity_id: str, at: str
) -> list[LoggedEvent]:
    """The entity's events at or before ``at``: their positions from the projections
    (``conn``), their bodies from the log, in position order."""
    positions = [p for (p,) in conn.execute(
        f"SELECT position FROM {TIMELINE} "
        "WHERE object_id = ? AND object_type = ? AND occurred_at <= ?",
        (entity_id, object_type, at),
    )]  # fmt: skip
    parsed = (parse_logged(p, i, body) for p, i, body, _ in read_bodies(log, positions))
    return [event for event in parsed if event is not None]


def entity_as_of(
    conn: sqlite3.Connection, log: Sql, object_type: str, entity_id: str, at: str
) -> State | None:
    """The entity's projected row at ``at`` (None if it had no event by then)."""
    best: tuple[Claim, LoggedEvent] | None = None
    deletes: list[str] = []
    for event in _events(conn, log, object_type, entity_id, at):
        found = claim(event)
        if found is None:
            continue
        if found.is_delete and found.deleted_at is not None:
            deletes.append(found.deleted_at)
        if best is None or found.key > best[0].key:
            best = (found, event)
    if best is None:
        return None
    found, event = best
    row = entity_row(found, event, (bool(deletes), min(deletes) if deletes else None))
    names = ("id", *found.spec.column_names, *COMMON_COLUMNS)
    state = dict(zip(names, row, strict=True))
    del state["data"], state["version_ms"], state["version_rank"]
    return state


def _rows(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[State]:
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


_HELD = "valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)"


def user_state(conn: sqlite3.Connection, log: Sql, user_id: str, at: str) -> State:
    """One user at ``at``: their row, whether banned, and their memberships with roles."""
    memberships = _rows(
        conn,
        "SELECT organization_id, role, valid_from AS role_since, membership_id "
        f"FROM membership_roles WHERE user_id = ? AND {_HELD} ORDER BY organization_id",
        (user_id, at, at),
    )
    banned = conn.execute(
        f"SELECT valid_from FROM user_bans WHERE user_id = ? AND {_HELD}", (user_id, at, at)
    ).fetchone()
    return {
        "as_of": at,
        "user": entity_as_of(conn, log, "user", user_id, at),
        "banned_since": banned[0] if banned else None,
        "memberships": memberships,
    }


def organization_state(conn: sqlite3.Connection, log: Sql, organization_id: str, at: str) -> State:
    """One organization at ``at``: its row and its members with their roles."""
    members = _rows(
        conn,
        "SELECT user_id, role, valid_from AS role_since, membership_id "
        f"FROM membership_roles WHERE organization_id = ? AND {_HELD} ORDER BY user_id",
        (organization_id, at, at),
    )
    return {
        "as_of": at,
        "organization": entity_as_of(conn, log, "organization", organization_id, at),
        "members": members,
    }


def overview(conn: sqlite3.Connection, at: str) -> State:
    """How many users and organizations existed at ``at`` (created, not yet deleted), how
    many memberships held and how many users were banned."""
    counts: State = {"as_of": at}
    for object_type in ("user", "organization"):
        (counts[BY_OBJECT_TYPE[object_type].table],) = conn.execute(
            "SELECT count(*) FROM (SELECT entity_id FROM entity_versions WHERE object_type = ? "
            "AND occurred_at <= ? GROUP BY entity_id HAVING count(fields) > 0 "
            "AND NOT max(fields IS NULL))",
            (object_type, at),
        ).fetchone()
    for name, table in (("memberships", "membership_roles"), ("banned_users", "user_bans")):
        (counts[name],) = conn.execute(
            f"SELECT count(*) FROM {table} WHERE {_HELD}", (at, at)
        ).fetchone()
    return counts
