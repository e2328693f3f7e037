"""A store in the one-file layout (projections beside the log) is upgraded at start-up: the
projection tables leave the log file, the log's rows stay byte for byte, and the projections
are rebuilt into their own file."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from eventstore.db import open_store, transaction
from eventstore.engine import sqlite3
from eventstore.writer import AppendJob, append_jobs
from tests.support.direct import RECEIVED
from tests.support.ingest import user_created
from tests.support.server import running_server

ONE_FILE_LAYOUT = [
    "CREATE TABLE users (id TEXT PRIMARY KEY, data TEXT)",
    "CREATE TABLE audit_timeline (position INTEGER PRIMARY KEY, event_id TEXT)",
    "CREATE INDEX audit_timeline_by_event_id_g3 ON audit_timeline (event_id)",
    "CREATE TABLE _projection_meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE _rebuild_users (id TEXT PRIMARY KEY)",
    "CREATE VIEW current_memberships AS SELECT * FROM users",
    "INSERT INTO users VALUES ('user_old', '{}')",
]


def _one_file_store(path: Path) -> list[tuple[object, ...]]:
    """A log with the old layout's projection tables in it; returns its log rows."""
    with closing(open_store(path, create=True)) as conn:
        with transaction(conn):
            append_jobs(conn, [AppendJob(f"msg_{n}", 1, RECEIVED, user_created()) for n in (1, 2)])
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm004_projections_leave_the_log'")
        for statement in ONE_FILE_LAYOUT:
            conn.execute(statement)
        return _log_rows(conn)


def _log_rows(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return [
        *conn.execute("SELECT * FROM events ORDER BY position"),
        *conn.execute("SELECT * FROM deliveries ORDER BY id"),
    ]


def test_projections_leave_the_log_and_its_rows_stay(db_path: Path, secret: str) -> None:
    rows = _one_file_store(db_path)
    with running_server(db_path, secret) as server:
        health = server.wait_projected()
        assert (health["position"], health["projected"]) == (2, 2)
    with closing(sqlite3.connect(db_path)) as conn:
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE sql NOT NULL")}
        log_names = ("events", "deliveries", "_sqlite_migrations", "idx__sqlite_migrations")
        assert not {n for n in names if not n.startswith(log_names)}, names
        assert _log_rows(conn) == rows
    with closing(sqlite3.connect(server.projections_path)) as conn:
        users = conn.execute("SELECT count(*) FROM users").fetchone()
        assert users == (2,), "the projections were not rebuilt from the log alone"
