"""The projection tables, their indexes and the views over them.

Tables are generated from the entity specs. They live in the projections file, never in the
log (``projections.files``). Their
``REFERENCES`` clauses are declared for Datasette's links and labels; they are not enforced
(``PRAGMA foreign_keys`` stays off), because Clerk events may name users or organizations whose
own events we never received.

The schema has a fingerprint (a hash of this DDL); when the code's fingerprint differs from the
one a store was last built with, the projections are rebuilt from the log (``ensure``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from projections.entities import SPECS, EntitySpec

TIMELINE = "audit_timeline"
TIMELINE_COLUMNS = (
    "position", "event_id", "occurred_at", "summary", "actor_id", "user_id", "organization_id",
    "client_ip", "device", "browser", "city", "country", "user_agent", "email", "event_type",
    "object_type", "object_id", "other_instance",
)  # fmt: skip
"""The readable sentence and who, where and with what come first: Datasette shows columns in
this order."""
META = "_projection_meta"
"""Bookkeeping (schema fingerprint, the checkpoint ``position``): not a projection, not
digested."""
ERRORS = "projection_errors"
"""Events the projector could not apply (the others are applied regardless): derived from the
log like a projection, but keyed by ``position``, so not digested."""
ERRORS_DDL = f"""CREATE TABLE {ERRORS} (
    position INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    error TEXT NOT NULL
)"""
META_DDL = f"CREATE TABLE {META} (key TEXT PRIMARY KEY, value TEXT)"

_VERSION_KEY = "version_ms INTEGER NOT NULL, version_rank INTEGER NOT NULL, event_id TEXT NOT NULL"
HISTORY_DDL = {
    "entity_versions": f"""(
    object_type TEXT NOT NULL, entity_id TEXT NOT NULL, {_VERSION_KEY},
    action TEXT, occurred_at TEXT, fields TEXT, summary TEXT NOT NULL,
    PRIMARY KEY (object_type, entity_id, version_ms, version_rank, event_id)
) WITHOUT ROWID""",
    "changes": f"""(
    entity_id TEXT NOT NULL, object_type TEXT NOT NULL, {_VERSION_KEY},
    field TEXT NOT NULL, before TEXT, after TEXT, changed_at TEXT NOT NULL,
    PRIMARY KEY (entity_id, object_type, version_ms, version_rank, event_id, field)
) WITHOUT ROWID""",
    "membership_roles": """(
    membership_id TEXT NOT NULL, valid_from TEXT NOT NULL,
    organization_id TEXT REFERENCES organizations(id), user_id TEXT REFERENCES users(id),
    role TEXT NOT NULL, valid_to TEXT,
    PRIMARY KEY (membership_id, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
) WITHOUT ROWID""",
    "user_bans": """(
    user_id TEXT NOT NULL REFERENCES users(id), valid_from TEXT NOT NULL, valid_to TEXT,
    PRIMARY KEY (user_id, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
) WITHOUT ROWID""",
}
"""Each entity's history in version order (``projections.history``): its versions, the fields
each changed, and the intervals of memberships' roles and users' bans."""
HISTORY_ORDER = {
    "entity_versions": "object_type, entity_id, version_ms, version_rank, event_id",
    "changes": "entity_id, object_type, version_ms, version_rank, event_id, field",
    "membership_roles": "membership_id, valid_from",
    "user_bans": "user_id, valid_from",
}

_REFERENCES = {
    "user_id": "users",
    "organization_id": "organizations",
    "last_active_organization_id": "organizations",
    "created_by": "users",
    "inviter_id": "users",
    "actor_id": "users",
}


@dataclass(frozen=True, slots=True)
class Index:
    table: str
    columns: tuple[str, ...]
    where: str = ""
    """A partial index's condition: for columns that are nearly always NULL."""


INDEXES = (
    Index("users", ("external_id",)),
    Index("organizations", ("slug",)),
    Index("organization_memberships", ("organization_id", "user_id")),
    Index("organization_memberships", ("user_id",)),
    Index("organization_invitations", ("organization_id",)),
    Index("organization_invitations", ("email_address",)),
    Index("organization_invitations", ("inviter_id",)),
    Index("organization_domains", ("organization_id",)),
    Index("sessions", ("user_id",)),
    Index("subscriptions", ("payer_id",)),
    Index("subscription_items", ("subscription_id",)),
    Index("waitlist_entries", ("email_address",)),
    Index("emails", ("to_email_address",)),
    Index("sms_messages", ("to_phone_number",)),
    Index(TIMELINE, ("event_id",)),
    Index(TIMELINE, ("occurred_at",)),
    Index(TIMELINE, ("user_id", "occurred_at")),
    Index(TIMELINE, ("organization_id", "occurred_at")),
    Index(TIMELINE, ("object_id",)),
    Index(TIMELINE, ("event_type", "occurred_at")),
    Index(TIMELINE, ("actor_id",), "actor_id IS NOT NULL"),
    Index("sessions", ("actor_id",), "actor_id IS NOT NULL"),
    Index(TIMELINE, ("client_ip",)),
    Index("membership_roles", ("organization_id", "valid_from")),
    Index("membership_roles", ("role", "valid_from", "valid_to", "organization_id", "user_id")),
    Index("membership_roles", ("user_id", "valid_from")),
)


def _column_ddl(name: str, sql_type: str, table: str) -> str:
    target = _REFERENCES.get(name)
    reference = f" REFERENCES {target}(id)" if target and target != table else ""
    return f"{name} {sql_type}{reference}"


def entity_table_ddl(spec: EntitySpec, name: str) -> str:
    """``CREATE TABLE`` for ``spec`` under the name ``name``."""
    flattened = [_column_ddl(c.name, c.sql_type, spec.table) for c in spec.columns]
    columns = [
        "id TEXT PRIMARY KEY",
        *flattened,
        "created_at TEXT",
        "updated_at TEXT",
        "deleted INTEGER NOT NULL CHECK (deleted IN (0, 1))",
        "deleted_at TEXT",
        "data TEXT",
        "event_id TEXT NOT NULL",
        "version_ms INTEGER NOT NULL",
        "version_rank INTEGER NOT NULL CHECK (version_rank IN (0, 1, 2))",
        "CHECK (deleted = 1 OR data IS NOT NULL)",
    ]
    return f"CREATE TABLE {name} (\n    " + ",\n    ".join(columns) + "\n)"


def timeline_ddl(name: str) -> str:
    columns = [
        "position INTEGER PRIMARY KEY",
        "event_id TEXT NOT NULL",
        *(_column_ddl(c, "TEXT", TIMELINE) for c in TIMELINE_COLUMNS[2:]),
    ]
    return f"CREATE TABLE {name} (\n    " + ",\n    ".join(columns) + "\n)"


def table_ddl(table: str, name: str) -> str:
    """``CREATE TABLE`` for the projection ``table`` under the name ``name``."""
    if table == TIMELINE:
        return timeline_ddl(name)
    if table in HISTORY_DDL:
        return f"CREATE TABLE {name} {HISTORY_DDL[table]}"
    return entity_table_ddl(next(s for s in SPECS if s.table == table), name)


def index_ddl(index: Index) -> str:
    unique = "UNIQUE " if index.columns == ("event_id",) else ""
    name = f"{index.table}_by_{'_'.join(index.columns)}"
    where = f" WHERE {index.where}" if index.where else ""
    return f"CREATE {unique}INDEX {name} ON {index.table} ({', '.join(index.columns)}){where}"


VIEWS = {
    "current_memberships": """
SELECT m.organization_id, m.user_id, m.id AS membership_id, m.role, m.role_name,
       m.created_at, m.updated_at
FROM organization_memberships AS m
WHERE m.deleted = 0
  AND NOT EXISTS (
    SELECT 1 FROM organization_memberships AS later
    WHERE later.organization_id = m.organization_id AND later.user_id = m.user_id
      AND (later.created_at, later.id) > (m.created_at, m.id))
  AND NOT EXISTS (SELECT 1 FROM organizations AS o WHERE o.id = m.organization_id AND o.deleted)
  AND NOT EXISTS (SELECT 1 FROM users AS u WHERE u.id = m.user_id AND u.deleted)""",
    "session_states": """
SELECT id, user_id, status,
       CASE WHEN status IN ('active', 'pending') AND expire_at <= now.at THEN 'expired'
            WHEN status IN ('active', 'pending') AND abandon_at <= now.at THEN 'abandoned'
            ELSE status END AS effective_status,
       last_active_at, expire_at, abandon_at, now.at AS as_of, deleted
FROM sessions, (SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now') AS at) AS now""",
    "invitation_states": """
SELECT id, organization_id, email_address, role, status,
       CASE WHEN status = 'pending' AND expires_at <= now.at THEN 'expired'
            ELSE status END AS effective_status,
       expires_at, now.at AS as_of, deleted
FROM organization_invitations, (SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now') AS at) AS now""",
}


SEARCHED = ("summary", "actor_id", "user_id", "organization_id", "object_id", "client_ip",
            "email", "event_type")  # fmt: skip
"""The timeline columns its full-text index covers: a search finds an actor, a target, an
email, an IP address or an event type."""
SEARCH = f"{TIMELINE}_fts"
"""What the search box queries: a view over the index's shards, with the columns of one."""
SEARCH_SHARDS = 16
"""The full-text index is this many FTS5 tables, each holding the rows of some users (else of
some objects). Forgetting a person (``projections.search``) rewrites only the shards that
held their words: before SQLite 3.42 a deleted row's words leave an FTS5 index only when the
whole of it is merged again, 87 MB and about 2 s for a million events in one table."""
SEARCH_TOKENS = "tokenize=\"unicode61 tokenchars '_.@-'\""
"""The shards' tokenizer: ``_ . @ -`` are part of a word, so an id, an address or an email is
one word."""


def search_shard(number: int) -> str:
    return f"{SEARCH}_{number}"


def shard_of(row: str = "", position: str = "position") -> str:
    """The SQL for the shard of a timeline row (``row`` is ``new.``, ``old.`` or empty): by
    the last two characters of its user, else of its object, else by its ``position``."""
    key = f"coalesce({row}user_id, {row}object_id)"
    mixed = f"unicode(substr({key}, -1)) + 31 * unicode(substr({key}, -2, 1))"
    return f"coalesce(({mixed}) % {SEARCH_SHARDS}, {row}{position} % {SEARCH_SHARDS})"


def _shard_ddl(number: int) -> str:
    return (
        f"CREATE VIRTUAL TABLE {search_shard(number)} USING fts5({', '.join(SEARCHED)}, "
        f'content="{TIMELINE}", content_rowid=position, {SEARCH_TOKENS})'
    )


def _kept_in_step(when: str) -> str:
    """The trigger that takes a deleted or updated timeline row's old words out of its shard
    and, for an update, puts the new ones in. Inserts are indexed a batch at a time
    (``projections.search``): a trigger would route each row on its own, at about 20 µs."""
    body, columns = [], ", ".join(SEARCHED)
    old, new = (", ".join(f"{row}.{c}" for c in ("position", *SEARCHED)) for row in ("old", "new"))
    for number, name in enumerate(map(search_shard, range(SEARCH_SHARDS))):
        body.append(f"INSERT INTO {name} ({name}, rowid, {columns}) SELECT 'delete', {old} "
                    f"WHERE {shard_of('old.')} = {number}")  # fmt: skip
        if when == "UPDATE":
            body.append(f"INSERT INTO {name} (rowid, {columns}) SELECT {new} "
                        f"WHERE {shard_of('new.')} = {number}")  # fmt: skip
    return (f"CREATE TRIGGER {SEARCH}_{when.lower()} AFTER {when} ON {TIMELINE} BEGIN "
            + "; ".join(body) + "; END")  # fmt: skip


def _search_view() -> str:
    """One arm per shard; each keeps only its own rows, as an external-content FTS5 table
    read without ``MATCH`` lists every row of the timeline."""
    arms = [
        f"SELECT rowid, {name} AS {SEARCH}, {', '.join(SEARCHED)} FROM {name} "
        f"WHERE {shard_of(position='rowid')} = {number}"
        for number, name in enumerate(map(search_shard, range(SEARCH_SHARDS)))
    ]
    return f"CREATE VIEW {SEARCH} AS " + " UNION ALL ".join(arms)


SEARCH_DDL = (
    *(_shard_ddl(number) for number in range(SEARCH_SHARDS)),
    *(_kept_in_step(when) for when in ("DELETE", "UPDATE")),
    _search_view(),
)
"""The timeline's full-text index: its shards (FTS5, their content read from the timeline),
the triggers for deletes and updates, and the view the search box queries (SQLite pushes a
``MATCH`` on the view down into every shard). Ids, addresses and emails are single tokens
(``_ . @ -`` are part of a token), so ``user_2abc`` or ``maya@example.com`` finds exactly
that."""


def view_ddl(name: str) -> str:
    return f"CREATE VIEW {name} AS{VIEWS[name]}"


PROJECTION_TABLES: tuple[str, ...] = (*(spec.table for spec in SPECS), TIMELINE, *HISTORY_DDL)


def fingerprint() -> str:
    """A hash of every table, index and view definition of this version of the code."""
    parts = [table_ddl(t, t) for t in PROJECTION_TABLES] + [ERRORS_DDL, META_DDL]
    parts += [index_ddl(i) for i in INDEXES]
    parts += [view_ddl(v) for v in VIEWS]
    parts += list(SEARCH_DDL)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
