"""Each entity's history in §6 version order: what changed, and what held when.

Every event that claims a tracked entity (``projections.tracked``) leaves one row in
``entity_versions``: its version key, its tracked fields (NULL for a delete) and its own
timeline sentence. From an entity's versions, in version order (never arrival order), one
pass (:func:`entity_pass`) derives

* ``changes``: per version, each tracked field that differs from the previous snapshot;
* ``membership_roles``: who held which role in which organization, from when until when;
* ``user_bans``: when each user was banned, and until when;
* the timeline sentence of each version, naming its security-relevant changes ("banned",
  "role changed from member to admin").

Everything derived depends only on the set of versions, so it is the same whatever the arrival
order. The projector re-derives each entity a batch touched (:func:`rederive`); a rebuild
derives every entity once, in primary-key order (:func:`derive_all`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby
from typing import Any, NamedTuple

import orjson

from eventstore.engine import sqlite3
from eventstore.timefmt import iso_ms
from projections.fold import VersionRow
from projections.phrases import sentence
from projections.schema import TIMELINE
from projections.tracked import shown

VERSIONS = "entity_versions"
CHANGES = "changes"
ROLES = "membership_roles"
BANS = "user_bans"


class Derived(NamedTuple):
    changes: list[tuple[Any, ...]]
    roles: list[tuple[Any, ...]]
    bans: list[tuple[Any, ...]]
    summaries: list[tuple[str, str, str]]
    """``(final sentence, event_id, own sentence)`` of every version."""


_SELECT = (
    "SELECT object_type, entity_id, version_ms, version_rank, event_id, action, occurred_at, "
    f"fields, summary FROM {VERSIONS}"
)
_ORDER = " ORDER BY object_type, entity_id, version_ms, version_rank, event_id"


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(k, before.get(k), v) for k, v in after.items() if before.get(k) != v]


class _Intervals:
    """Open and closed intervals of one value (a role, a ban) over an entity's versions."""

    def __init__(self) -> None:
        self.closed: list[tuple[str, str, str | None, tuple[Any, ...]]] = []
        self.open: tuple[str, str, tuple[Any, ...]] | None = None

    def hold(self, value: str | None, at: str, extra: tuple[Any, ...]) -> None:
        if self.open is not None and self.open[0] == value:
            return
        self.close(at)
        if value is not None:
            self.open = (value, at, extra)

    def close(self, at: str) -> None:
        if self.open is not None and self.open[1] != at:  # a zero-length interval is none
            self.closed.append((self.open[0], self.open[1], at, self.open[2]))
        self.open = None

    def all(self) -> list[tuple[str, str, str | None, tuple[Any, ...]]]:
        rest = [] if self.open is None else [(*self.open[:2], None, self.open[2])]
        return self.closed + rest

    def copy(self) -> _Intervals:
        twin = _Intervals()
        twin.closed, twin.open = list(self.closed), self.open
        return twin


class _Pass:
    """One entity's pass over its versions in version order (:func:`entity_pass`), which can
    be copied after any version and continued in two ways (:func:`derive_added`)."""

    __slots__ = ("at", "deleted", "entity_id", "intervals", "object_type", "previous")

    def __init__(self, object_type: str, entity_id: str) -> None:
        self.object_type, self.entity_id = object_type, entity_id
        self.previous: dict[str, Any] | None = None
        self.deleted = False
        self.at = ""
        self.intervals = _Intervals()

    def copy(self) -> _Pass:
        twin = _Pass(self.object_type, self.entity_id)
        twin.previous, twin.deleted, twin.at = self.previous, self.deleted, self.at
        twin.intervals = self.intervals.copy()
        return twin

    def step(self, version: VersionRow, out: Derived | None) -> None:
        """Take the next version; its changes and sentence go to ``out`` (None: only the
        state moves on, for versions whose rows are already known)."""
        _, _, version_ms, rank, event_id, action, occurred_at, fields, summary = version
        at = self.at = max(self.at, occurred_at or iso_ms(version_ms))  # never backwards
        key = (self.entity_id, self.object_type, version_ms, rank, event_id)
        if fields is None:  # a delete: final
            if out is not None:
                if self.previous is not None and not self.deleted:
                    out.changes.append((*key, "deleted", "no", "yes", at))
                out.summaries.append((summary, event_id, summary))
            self.deleted = True
            self.intervals.close(at)
            return
        current = orjson.loads(fields)
        if out is not None:
            previous = self.previous
            diffs = _diff(previous, current) if previous is not None else []
            out.changes.extend((*key, f, shown(b), shown(a), at) for f, b, a in diffs)
            final = sentence(self.object_type, action, summary, previous or {}, current, diffs)
            out.summaries.append((final, event_id, summary))
        if not self.deleted:
            _hold(self.object_type, current, self.intervals, at)
        self.previous = current

    def finish(self, out: Derived) -> None:
        _intervals(self.object_type, self.entity_id, self.intervals, out)


def entity_pass(versions: Sequence[VersionRow], out: Derived) -> None:
    """Derive one entity's rows from its ``versions`` (in version order) into ``out``."""
    state = _Pass(versions[0][0], versions[0][1])
    for version in versions:
        state.step(version, out)
    state.finish(out)


def _hold(object_type: str, fields: dict[str, Any], intervals: _Intervals, at: str) -> None:
    if object_type == "organizationMembership":
        extra = (fields.get("organization_id"), fields.get("user_id"))
        intervals.hold(fields.get("role") or "member", at, extra)
    elif object_type == "user":
        intervals.hold("banned" if fields.get("banned") == "yes" else None, at, ())


def _intervals(object_type: str, entity_id: str, intervals: _Intervals, out: Derived) -> None:
    for value, start, end, extra in intervals.all():
        if object_type == "organizationMembership":
            out.roles.append((entity_id, start, extra[0], extra[1], value, end))
        elif object_type == "user":
            out.bans.append((entity_id, start, end))


def _insert(conn: sqlite3.Connection, out: Derived) -> None:
    conn.executemany(f"INSERT INTO {CHANGES} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", out.changes)
    conn.executemany(f"INSERT INTO {ROLES} VALUES (?, ?, ?, ?, ?, ?)", out.roles)
    conn.executemany(f"INSERT INTO {BANS} VALUES (?, ?, ?)", out.bans)


_SUMMARIES = "temp.new_summaries"
_UPDATE_SUMMARIES = (
    f"CREATE TABLE IF NOT EXISTS {_SUMMARIES} (event_id TEXT PRIMARY KEY, summary TEXT)",
    f"INSERT OR REPLACE INTO {_SUMMARIES} VALUES (?2, ?1)",
    f"UPDATE {TIMELINE} SET summary = n.summary FROM {_SUMMARIES} AS n "
    f"WHERE {TIMELINE}.event_id = n.event_id AND {TIMELINE}.summary IS NOT n.summary",
    f"DELETE FROM {_SUMMARIES}",
)


def insert_versions(conn: sqlite3.Connection, rows: Iterable[VersionRow]) -> None:
    conn.executemany(f"INSERT OR REPLACE INTO {VERSIONS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def rederive(conn: sqlite3.Connection, entities: Iterable[tuple[str, str]]) -> None:
    """Derive again the rows of each ``(object_type, entity_id)`` from all its versions (the
    projector, after a batch added versions to them)."""
    out = Derived([], [], [], [])
    for object_type, entity_id in sorted(set(entities)):
        versions = conn.execute(
            f"{_SELECT} WHERE object_type = ? AND entity_id = ?{_ORDER}", (object_type, entity_id)
        ).fetchall()
        conn.execute(
            f"DELETE FROM {CHANGES} WHERE entity_id = ? AND object_type = ?",
            (entity_id, object_type),
        )
        if object_type == "organizationMembership":
            conn.execute(f"DELETE FROM {ROLES} WHERE membership_id = ?", (entity_id,))
        elif object_type == "user":
            conn.execute(f"DELETE FROM {BANS} WHERE user_id = ?", (entity_id,))
        if versions:
            entity_pass(versions, out)
    _insert(conn, out)
    _update_summaries(conn, [(final, e) for final, e, _ in out.summaries])


def derive_added(conn: sqlite3.Connection, added: Sequence[VersionRow]) -> dict[str, str]:
    """Add the history of the new versions ``added`` (before they are stored): only the rows
    that they change are written. Returns the final sentence of each of them that differs
    from its own, by ``event_id``, for its timeline row (the projector, for each batch).

    What is stored is what the entity's stored versions derive, so deriving those again and
    then those plus ``added`` tells which rows change: in log order, the new version's rows
    and the interval it closes. When every stored version comes before the new ones (events
    in order, the usual case), the pass starts from the state the stored rows give
    (:func:`_head`), so a step's cost does not grow with the entity's history; otherwise it
    derives the entity's stored versions again."""
    by_entity: dict[tuple[str, str], list[VersionRow]] = {}
    for row in added:
        by_entity.setdefault((row[0], row[1]), []).append(row)
    old, new = Derived([], [], [], []), Derived([], [], [], [])
    for entity in sorted(by_entity):
        mine = sorted(by_entity[entity], key=_version_key)
        head = _head(conn, entity, mine)
        if head is not None:
            _continue_head(head, mine, old, new)
        else:
            stored = _stored_versions(conn, entity, {row[4] for row in mine})
            _continue_pass(entity, stored, mine, old, new)
    _write_differences(conn, old, new)
    own = {row[4] for row in added}
    before = {event_id: final for final, event_id, _ in old.summaries}
    _update_summaries(conn, [(final, e) for final, e, _ in new.summaries
                             if e not in own and before.get(e) != final])  # fmt: skip
    return {e: final for final, e, mine in new.summaries if e in own and final != mine}


def _continue_pass(
    entity: tuple[str, str],
    stored: list[VersionRow],
    mine: list[VersionRow],
    old: Derived,
    new: Derived,
) -> None:
    """Derive ``entity`` from its ``stored`` versions into ``old`` and from those and
    ``mine`` into ``new``, both in version order, but for what the versions before the first
    of ``mine`` derive (the same either way), which is left out of both but for intervals."""
    split = bisect_left(stored, _version_key(mine[0]), key=_version_key)
    state = _Pass(*entity)
    for version in stored[:split]:
        state.step(version, None)
    rest = stored[split:]
    if rest:
        before = state.copy()
        for version in rest:
            before.step(version, old)
        before.finish(old)
    elif split:
        state.copy().finish(old)
    for version in sorted(rest + mine, key=_version_key):
        state.step(version, new)
    state.finish(new)


def _continue_head(head: _Pass, mine: list[VersionRow], old: Derived, new: Derived) -> None:
    """:func:`_continue_pass` from ``head``, the state after every stored version (which all
    come before ``mine``). The intervals those closed are left out of both ``old`` and ``new``
    (they are the same in both, so they change no row)."""
    head.copy().finish(old)
    for version in mine:
        head.step(version, new)
    head.finish(new)


_NEWEST = " ORDER BY version_ms DESC, version_rank DESC, event_id DESC LIMIT 1"
_LAST = (
    f"SELECT version_ms, version_rank, event_id, fields FROM {VERSIONS} "
    f"WHERE object_type = ? AND entity_id = ?{_NEWEST}"
)
_PREVIOUS = (
    f"SELECT fields FROM {VERSIONS} "
    f"WHERE object_type = ? AND entity_id = ? AND fields IS NOT NULL{_NEWEST}"
)
_SPAN = (
    f"SELECT max(occurred_at), max(fields IS NULL), "
    f"max(event_id IN (SELECT value FROM json_each(?3))) FROM {VERSIONS} "
    "WHERE object_type = ?1 AND entity_id = ?2"
)
_OPEN = {
    "organizationMembership": f"SELECT role, valid_from, organization_id, user_id FROM {ROLES} "
    "WHERE membership_id = ? AND valid_to IS NULL",
    "user": f"SELECT 'banned', valid_from FROM {BANS} WHERE user_id = ? AND valid_to IS NULL",
}


def _head(
    conn: sqlite3.Connection, entity: tuple[str, str], mine: list[VersionRow]
) -> _Pass | None:
    """The state of ``entity``'s pass after all its stored versions, read from them and from
    what they derived (the last fields, whether any deletes, the latest time, the open
    interval) by indexed look-ups and one scan in SQL; None unless every stored version comes
    before the first of ``mine`` and none is one of them."""
    last = conn.execute(_LAST, entity).fetchone()
    if last is not None and tuple(last[:3]) >= _version_key(mine[0]):
        return None
    head = _Pass(*entity)
    if last is None:
        return head
    ids = orjson.dumps([row[4] for row in mine]).decode()
    latest, deleted, replaced = conn.execute(_SPAN, (*entity, ids)).fetchone()
    if replaced:
        return None
    head.at = latest or ""  # a version without a time has version_ms 0: it never raises it
    head.deleted = bool(deleted)
    fields = last[3] if last[3] is not None else _fields_before_deletes(conn, entity)
    head.previous = orjson.loads(fields) if fields is not None else None
    opened = _OPEN.get(entity[0])
    row = conn.execute(opened, (entity[1],)).fetchone() if opened else None
    if row is not None and not head.deleted:
        head.intervals.open = (row[0], row[1], tuple(row[2:]))
    return head


def _fields_before_deletes(conn: sqlite3.Connection, entity: tuple[str, str]) -> str | None:
    """The fields of ``entity``'s newest version that is not a delete (when its newest is)."""
    row = conn.execute(_PREVIOUS, entity).fetchone()
    return row[0] if row is not None else None


def _version_key(row: VersionRow) -> tuple[int, int, str]:
    return row[2], row[3], row[4]


def _stored_versions(
    conn: sqlite3.Connection, entity: tuple[str, str], replaced: set[str]
) -> list[VersionRow]:
    """The versions stored for ``entity``, in version order, but those of ``replaced``."""
    rows = conn.execute(f"{_SELECT} WHERE object_type = ? AND entity_id = ?{_ORDER}", entity)
    return [row for row in rows if row[4] not in replaced]


_DELETE = {
    CHANGES: "entity_id = ? AND object_type = ? AND version_ms = ? AND version_rank = ? "
    "AND event_id = ? AND field = ?",
    ROLES: "membership_id = ? AND valid_from = ?",
    BANS: "user_id = ? AND valid_from = ?",
}
_KEY_WIDTH = {CHANGES: 6, ROLES: 2, BANS: 2}


def _write_differences(conn: sqlite3.Connection, old: Derived, new: Derived) -> None:
    """Delete the rows of ``old`` that ``new`` does not have, and insert those it adds."""
    pairs = ((CHANGES, old.changes, new.changes), (ROLES, old.roles, new.roles),
             (BANS, old.bans, new.bans))  # fmt: skip
    for table, before, after in pairs:
        width = _KEY_WIDTH[table]
        gone = set(before).difference(after)
        conn.executemany(
            f"DELETE FROM {table} WHERE {_DELETE[table]}",
            sorted(row[:width] for row in gone),
        )
        fresh = sorted(set(after).difference(before), key=lambda row: row[:width])
        if fresh:
            conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(fresh[0]))})",
                             fresh)  # fmt: skip


def _update_summaries(conn: sqlite3.Connection, summaries: list[tuple[str, str]]) -> None:
    """Set the timeline sentences ``(summary, event_id)`` that differ, in one statement (one
    by one, each was a statement and a segment of the full-text index)."""
    create, stage, update, clear = _UPDATE_SUMMARIES
    conn.execute(create)
    conn.executemany(stage, summaries)
    conn.execute(update)
    conn.execute(clear)


def _entities(rows: Iterator[VersionRow]) -> Iterator[list[VersionRow]]:
    for _, versions in groupby(rows, key=lambda row: (row[0], row[1])):
        yield list(versions)


_SENTENCES = "temp.new_sentences"


def derive_all(conn: sqlite3.Connection, batch: int = 20_000) -> None:
    """Derive every entity's rows from ``entity_versions`` into empty tables (a rebuild).

    The sentences that name changes are collected by timeline position and written in one
    ``UPDATE`` in position order: one by one, by ``event_id``, they would visit the timeline's
    pages at random."""
    conn.execute(f"CREATE TABLE {_SENTENCES} (position INTEGER PRIMARY KEY, summary TEXT)")
    cursor = conn.cursor()
    cursor.execute(_SELECT + _ORDER)
    out = Derived([], [], [], [])
    for versions in _entities(iter(cursor)):
        entity_pass(versions, out)
        if len(out.summaries) >= batch:
            _flush(conn, out)
            out = Derived([], [], [], [])
    _flush(conn, out)
    conn.execute(
        f"UPDATE {TIMELINE} SET summary = n.summary FROM {_SENTENCES} AS n "
        f"WHERE {TIMELINE}.position = n.position"
    )
    conn.execute(f"DROP TABLE {_SENTENCES}")


def _flush(conn: sqlite3.Connection, out: Derived) -> None:
    _insert(conn, out)
    changed = [(e, final) for final, e, own in out.summaries if final != own]
    conn.executemany(
        f"INSERT INTO {_SENTENCES} SELECT position, ?2 FROM {TIMELINE} WHERE event_id = ?1",
        changed,
    )
