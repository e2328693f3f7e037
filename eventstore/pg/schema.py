"""The PostgreSQL log's schema: the SQLite log's tables and columns (``eventstore.schema``),
with its invariants enforced by the database.

* ``event_id`` is UNIQUE; ``position`` is the primary key and each new event's position must
  be the one after the log's last (:data:`EVENTS_CONTIGUOUS`). Together they make positions
  commit in order whoever writes: a transaction can only append position ``n + 1`` once ``n``
  is committed (or its own), so a follower reading ``position > checkpoint`` never skips a
  late commit. The writer's table lock (``eventstore.pg.writer``) keeps writers from colliding.
* UPDATE, DELETE and TRUNCATE are refused on every table, except the one path of a recorded
  redaction (as SQLite's migration 6): a new ``body`` for a position that ``redactions``
  records, in the transaction that appended the redaction event, and erased ``remote_addr``
  and ``user_agent`` on the deliveries of a redacted event.
* every event carries its ``chain`` value (``eventstore.chain``), computed in the append.

Migrations are numbered and recorded in ``clerk_audit_migrations``, applied under an advisory
lock, so several servers starting at once migrate once.
"""

from __future__ import annotations

from collections.abc import Callable

from eventstore.pg.sql import PgSql
from eventstore.schema import _DELIVERY_KEPT, _EVENT_KEPT, OUTCOMES

_MIGRATION_LOCK = 0x434C4B41
"""``pg_advisory_xact_lock`` key while migrating ("CLKA", as SQLite's application id)."""

_REFUSE = """
CREATE FUNCTION clerk_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$"""

EVENTS = """
CREATE TABLE events (
    position BIGINT PRIMARY KEY CHECK (position > 0),
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT,
    object_type TEXT,
    object_id TEXT,
    instance_id TEXT,
    occurred_at TEXT,
    received_at TEXT NOT NULL,
    svix_timestamp BIGINT NOT NULL,
    body BYTEA NOT NULL,
    body_sha256 TEXT NOT NULL CHECK (length(body_sha256) = 64),
    status TEXT NOT NULL CHECK (status IN ('ok', 'quarantined')),
    quarantine_reason TEXT,
    chain TEXT NOT NULL CHECK (length(chain) = 64),
    CHECK ((status = 'quarantined') = (quarantine_reason IS NOT NULL)),
    CHECK (status = 'quarantined' OR event_type IS NOT NULL)
)"""

EVENTS_CONTIGUOUS = """
CREATE FUNCTION clerk_audit_next_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.position <> coalesce((SELECT max(position) FROM events), 0) + 1 THEN
        RAISE EXCEPTION 'events: position % is not the one after the log''s last', NEW.position
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER events_contiguous BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION clerk_audit_next_position()"""


def _same(columns: tuple[str, ...]) -> str:
    return (f"ROW({', '.join(f'NEW.{c}' for c in columns)}) IS NOT DISTINCT FROM "
            f"ROW({', '.join(f'OLD.{c}' for c in columns)})")  # fmt: skip


EVENTS_REDACTION_ONLY = f"""
CREATE FUNCTION clerk_audit_events_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {_same(_EVENT_KEPT)} AND EXISTS (
        SELECT 1 FROM redactions WHERE position = OLD.position AND body = NEW.body
        AND redaction_event_id = (SELECT event_id FROM events ORDER BY position DESC LIMIT 1))
    THEN RETURN NEW; END IF;
    RAISE EXCEPTION 'events is append-only: UPDATE refused (no redaction recorded)'
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION clerk_audit_events_update()"""

DELIVERIES = f"""
CREATE TABLE deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT,
    received_at TEXT NOT NULL,
    svix_timestamp BIGINT,
    outcome TEXT NOT NULL CHECK (outcome IN {OUTCOMES!r}),
    reason TEXT,
    remote_addr TEXT,
    user_agent TEXT,
    body_sha256 TEXT
)"""

DELIVERIES_REDACTION_ONLY = f"""
CREATE FUNCTION clerk_audit_deliveries_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {_same(_DELIVERY_KEPT)} AND EXISTS (
        SELECT 1 FROM events JOIN redactions USING (position)
        WHERE events.event_id = OLD.event_id)
    THEN RETURN NEW; END IF;
    RAISE EXCEPTION 'deliveries is append-only: UPDATE refused (no redaction recorded)'
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER deliveries_no_update BEFORE UPDATE ON deliveries
    FOR EACH ROW EXECUTE FUNCTION clerk_audit_deliveries_update()"""

REDACTIONS = """
CREATE TABLE redactions (
    position BIGINT NOT NULL,
    redaction_event_id TEXT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (position, redaction_event_id)
);
CREATE FUNCTION clerk_audit_redaction_recorded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM events WHERE event_id = NEW.redaction_event_id
               AND event_type = 'clerk-audit.redaction' AND status = 'ok'
               AND position > NEW.position)
    THEN RETURN NEW; END IF;
    RAISE EXCEPTION 'redactions: each row must name a later clerk-audit.redaction event'
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER redactions_recorded BEFORE INSERT ON redactions
    FOR EACH ROW EXECUTE FUNCTION clerk_audit_redaction_recorded()"""

INTEGRITY_CHECKS = """
CREATE TABLE integrity_checks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('verify', 'checkpoint')),
    checked_at TEXT NOT NULL,
    position BIGINT NOT NULL,
    chain TEXT,
    ok INTEGER NOT NULL CHECK (ok IN (0, 1)),
    detail TEXT
)"""

IMPORTS = """
CREATE TABLE imports (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imported_at TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE imported_events (
    position BIGINT PRIMARY KEY,
    import_id BIGINT NOT NULL,
    source_position BIGINT
)"""

INDEXES = """
CREATE INDEX events_redactions ON events (position) WHERE event_type = 'clerk-audit.redaction';
CREATE INDEX events_quarantined ON events (position) WHERE status = 'quarantined';
CREATE INDEX deliveries_event_id ON deliveries (event_id);
CREATE INDEX deliveries_outcome ON deliveries (outcome, received_at)"""

TABLES = ("events", "deliveries", "redactions", "integrity_checks", "imports",
          "imported_events")  # fmt: skip


def _refusals() -> str:
    """DELETE and TRUNCATE refused everywhere; UPDATE refused where no redaction may pass."""
    statements = []
    for table in TABLES:
        ops = "UPDATE OR DELETE" if table not in ("events", "deliveries") else "DELETE"
        statements.append(f"CREATE TRIGGER {table}_append_only BEFORE {ops} ON {table} "
                          "FOR EACH ROW EXECUTE FUNCTION clerk_audit_refuse()")  # fmt: skip
        statements.append(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                          "FOR EACH STATEMENT EXECUTE FUNCTION clerk_audit_refuse()")  # fmt: skip
    return ";\n".join(statements)


def _m001_log(sql: PgSql) -> None:
    """The log as the SQLite log has it after its migration 11."""
    for block in (_REFUSE, EVENTS, EVENTS_CONTIGUOUS, DELIVERIES, REDACTIONS,
                  EVENTS_REDACTION_ONLY, DELIVERIES_REDACTION_ONLY, INTEGRITY_CHECKS, IMPORTS,
                  INDEXES, _refusals()):  # fmt: skip
        sql.conn.execute(block.encode())  # several statements, no parameters


MIGRATIONS: tuple[tuple[str, Callable[[PgSql], None]], ...] = (("m001_log", _m001_log),)


def migrate(sql: PgSql) -> list[str]:
    """Apply the migrations this database has not had, in one transaction; returns their
    names."""
    sql.execute("BEGIN")
    try:
        sql.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        sql.execute(
            "CREATE TABLE IF NOT EXISTS clerk_audit_migrations "
            "(name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {name for (name,) in sql.execute("SELECT name FROM clerk_audit_migrations")}
        applied = []
        for name, migration in MIGRATIONS:
            if name not in done:
                migration(sql)
                sql.execute("INSERT INTO clerk_audit_migrations (name) VALUES (?)", (name,))
                applied.append(name)
        sql.execute("COMMIT")
    except BaseException:
        sql.conn.rollback()
        raise
    return applied
