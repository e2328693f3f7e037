"""The log's schema: ``events``, ``deliveries`` and ``redactions``, created and migrated by the
program itself.

Invariants live here, not only in Python: ``event_id`` is UNIQUE, triggers refuse any UPDATE or
DELETE of these tables (but the one path of a recorded redaction, m006) and any INSERT that
would replace an existing event (``INSERT OR REPLACE`` deletes without firing DELETE
triggers), and CHECK constraints pin the vocabularies.
Projection tables are not here: they live in a file of their own (``projections``). A log
from the one-file layout loses its projection tables in migration 4; its rows stay untouched.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from eventstore.chain import GENESIS, links

APPLICATION_ID = 0x434C4B41
"""``PRAGMA application_id`` of a clerk-audit store ("CLKA")."""

OUTCOMES = (
    "stored",
    "duplicate",
    "conflict",
    "quarantined",
    "rejected",
    "too_large",
    "unavailable",
)

log_migrations = Migrations("clerk-audit-log")


def _append_only(table: str) -> list[str]:
    return [
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
        BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END""",
        f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END""",
    ]


EVENTS = """
CREATE TABLE events (
    position INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT,
    object_type TEXT,
    object_id TEXT,
    instance_id TEXT,
    occurred_at TEXT,
    received_at TEXT NOT NULL,
    svix_timestamp INTEGER NOT NULL,
    body BLOB NOT NULL CHECK (typeof(body) = 'blob'),
    body_sha256 TEXT NOT NULL CHECK (length(body_sha256) = 64),
    status TEXT NOT NULL CHECK (status IN ('ok', 'quarantined')),
    quarantine_reason TEXT,
    CHECK ((status = 'quarantined') = (quarantine_reason IS NOT NULL)),
    CHECK (status = 'quarantined' OR event_type IS NOT NULL)
)"""

EVENTS_NO_REPLACE = """
CREATE TRIGGER events_no_replace BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE event_id = NEW.event_id OR position = NEW.position)
BEGIN SELECT RAISE(ABORT, 'events is append-only: event_id or position already stored'); END"""

DELIVERIES = f"""
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    event_id TEXT,
    received_at TEXT NOT NULL,
    svix_timestamp INTEGER,
    outcome TEXT NOT NULL CHECK (outcome IN {OUTCOMES!r}),
    reason TEXT,
    remote_addr TEXT,
    user_agent TEXT,
    body_sha256 TEXT
)"""

DELIVERIES_NO_REPLACE = """
CREATE TRIGGER deliveries_no_replace BEFORE INSERT ON deliveries
WHEN EXISTS (SELECT 1 FROM deliveries WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'deliveries is append-only: id already stored'); END"""

INDEXES = [
    "CREATE INDEX events_object ON events (object_type, object_id)",
    "CREATE INDEX events_event_type ON events (event_type)",
    "CREATE INDEX events_occurred_at ON events (occurred_at)",
    "CREATE INDEX deliveries_event_id ON deliveries (event_id)",
    "CREATE INDEX deliveries_outcome ON deliveries (outcome, received_at)",
]


@log_migrations()
def m001_events_and_deliveries(db: Database) -> None:
    statements = [EVENTS, EVENTS_NO_REPLACE, DELIVERIES, DELIVERIES_NO_REPLACE, *INDEXES]
    for statement in [*statements, *_append_only("events"), *_append_only("deliveries")]:
        db.execute(statement)


@log_migrations()
def m002_quarantined_index(db: Database) -> None:
    """Quarantined events are rare and looked for by status: a small partial index."""
    db.execute("CREATE INDEX events_quarantined ON events (position) WHERE status = 'quarantined'")


@log_migrations()
def m003_leaner_log_indexes(db: Database) -> None:
    """Every append paid for indexes no query used: lookups by object and by time go through
    ``audit_timeline``, which has its own."""
    db.execute("DROP INDEX IF EXISTS events_object")
    db.execute("DROP INDEX IF EXISTS events_occurred_at")


LOG_TABLES = ("events", "deliveries")


@log_migrations()
def m004_projections_leave_the_log(db: Database) -> None:
    """The one-file layout kept projections beside the log; they now live in their own file,
    rebuilt from the log, so every table, view and trigger that is not the log's goes."""
    keep = " AND ".join(f"name NOT LIKE '{t}%'" for t in LOG_TABLES)
    found = db.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('view', 'table') "
        f"AND name NOT LIKE 'sqlite%' AND name NOT LIKE '\\_sqlite%' ESCAPE '\\' AND {keep}"
    ).fetchall()
    for kind, name in sorted(found, key=lambda row: row[0] != "view"):
        db.execute(f"DROP {kind.upper()} IF EXISTS [{name}]")


def _chain_existing(db: Database) -> None:
    """Compute ``chain`` for the events a log held before it had one (position order)."""
    previous, batch = GENESIS, 10_000
    rows = db.execute(
        "SELECT position, event_id, body_sha256 FROM events ORDER BY position"
    ).fetchall()
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        values = links(previous, part)
        db.conn.executemany(
            "UPDATE events SET chain = ? WHERE position = ?",
            [(value.hex(), row[0]) for value, row in zip(values, part, strict=True)],
        )
        previous = values[-1]


@log_migrations()
def m005_hash_chain(db: Database) -> None:
    """Every event commits to the one before it (``eventstore.chain``). Events already stored
    get their links now, in position order: the one time the append-only trigger steps aside,
    inside this migration's transaction."""
    db.execute("ALTER TABLE events ADD COLUMN chain TEXT")
    db.execute("DROP TRIGGER events_no_update")
    _chain_existing(db)
    db.execute(_append_only("events")[0])
    db.execute(
        """CREATE TRIGGER events_chained BEFORE INSERT ON events
        WHEN NEW.chain IS NULL OR length(NEW.chain) != 64
        BEGIN SELECT RAISE(ABORT, 'events: every event needs its chain value'); END"""
    )


_EVENT_KEPT = (
    "position", "event_id", "event_type", "object_type", "object_id", "instance_id",
    "occurred_at", "received_at", "svix_timestamp", "body_sha256", "status",
    "quarantine_reason", "chain",
)  # fmt: skip
"""Every ``events`` column but ``body``: a redaction may change none of them."""
_DELIVERY_KEPT = ("id", "event_id", "received_at", "svix_timestamp", "outcome", "reason",
                  "body_sha256")  # fmt: skip
"""Every ``deliveries`` column but ``remote_addr`` and ``user_agent``."""


def _unchanged(columns: tuple[str, ...]) -> str:
    return " AND ".join(f"NEW.{c} IS OLD.{c}" for c in columns)


REDACTIONS = """
CREATE TABLE redactions (
    position INTEGER NOT NULL,
    redaction_event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (position, redaction_event_id)
) WITHOUT ROWID"""

REDACTIONS_RECORDED = """
CREATE TRIGGER redactions_recorded BEFORE INSERT ON redactions
WHEN NOT EXISTS (
    SELECT 1 FROM events WHERE event_id = NEW.redaction_event_id
    AND event_type = 'clerk-audit.redaction' AND status = 'ok' AND position > NEW.position)
    OR EXISTS (SELECT 1 FROM redactions WHERE position = NEW.position
               AND redaction_event_id = NEW.redaction_event_id)
BEGIN SELECT RAISE(ABORT, 'redactions: each row must name a later clerk-audit.redaction event');
END"""

EVENTS_REDACTION_ONLY = f"""
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
WHEN NOT ({_unchanged(_EVENT_KEPT)}
          AND EXISTS (SELECT 1 FROM redactions WHERE position = OLD.position
                      AND body = NEW.body
                      AND redaction_event_id = (SELECT event_id FROM events
                                                ORDER BY position DESC LIMIT 1)))
BEGIN SELECT RAISE(ABORT, 'events is append-only: UPDATE refused (no redaction recorded)');
END"""

DELIVERIES_REDACTION_ONLY = f"""
CREATE TRIGGER deliveries_no_update BEFORE UPDATE ON deliveries
WHEN NOT ({_unchanged(_DELIVERY_KEPT)}
          AND EXISTS (SELECT 1 FROM events JOIN redactions USING (position)
                      WHERE events.event_id = OLD.event_id))
BEGIN SELECT RAISE(ABORT, 'deliveries is append-only: UPDATE refused (no redaction recorded)');
END"""


@log_migrations()
def m006_redactions(db: Database) -> None:
    """``clerk-audit redact`` (``eventstore.redaction``): the append-only ``redactions`` table,
    whose rows must name a later ``clerk-audit.redaction`` event, and UPDATE triggers that let
    exactly a recorded redaction through: a new ``body`` (every other column unchanged) that is
    the one ``redactions`` records for the position and the log's last event (the transaction
    that appended that redaction event; a body can never be changed again after it), and
    erased ``remote_addr`` and
    ``user_agent`` for the deliveries of a redacted position. Every other UPDATE is refused as
    before."""
    db.execute(REDACTIONS)
    db.execute(REDACTIONS_RECORDED)
    for statement in _append_only("redactions")[:2]:
        db.execute(statement)
    db.execute("DROP TRIGGER events_no_update")
    db.execute(EVENTS_REDACTION_ONLY)
    db.execute("DROP TRIGGER deliveries_no_update")
    db.execute(DELIVERIES_REDACTION_ONLY)


INTEGRITY_CHECKS = """
CREATE TABLE integrity_checks (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('verify', 'checkpoint')),
    checked_at TEXT NOT NULL,
    position INTEGER NOT NULL,
    chain TEXT,
    ok INTEGER NOT NULL CHECK (ok IN (0, 1)),
    detail TEXT
)"""


@log_migrations()
def m007_integrity_checks(db: Database) -> None:
    """What ``verify`` found and which checkpoints were taken, when (append-only), for the
    auditor's page that shows the chain head, the last checkpoint and the last verify."""
    db.execute(INTEGRITY_CHECKS)
    for statement in _append_only("integrity_checks"):
        db.execute(statement)


IMPORTS = """
CREATE TABLE imports (
    id INTEGER PRIMARY KEY,
    imported_at TEXT NOT NULL,
    source TEXT NOT NULL
)"""

IMPORTED_EVENTS = """
CREATE TABLE imported_events (
    position INTEGER PRIMARY KEY,
    import_id INTEGER NOT NULL,
    source_position INTEGER
)"""


@log_migrations()
def m010_imports(db: Database) -> None:
    """``clerk-audit import`` (``eventstore.transfer``): one ``imports`` row per run (when, from
    which file) and one ``imported_events`` row per event it appended (its position here, the
    run, its position in the exported log). Both append-only. A table of their own, not a
    ``deliveries`` outcome: ``deliveries`` records HTTP requests, and widening its CHECK would
    mean copying the whole table."""
    db.execute(IMPORTS)
    db.execute(IMPORTED_EVENTS)
    for statement in [*_append_only("imports"), *_append_only("imported_events")]:
        db.execute(statement)


@log_migrations()
def m011_redaction_events_index(db: Database) -> None:
    """Only redaction events are looked up by type (``eventstore.redaction``): a partial index
    for them instead of one over every event's type. That one cost each group commit a 16 KiB
    page per distinct type it held: 29% of the write-ahead log's bytes per event in the
    ingest benchmark's mix, and the disk's bytes are what a group commit waits for."""
    db.execute("DROP INDEX IF EXISTS events_event_type")
    db.execute(
        "CREATE INDEX events_redactions ON events (position) "
        "WHERE event_type = 'clerk-audit.redaction'"
    )
