"""The log in PostgreSQL (``eventstore.pg``): what the database itself refuses, and several
writers with one order that a follower reads without skipping or repeating (CONTRACT §10)."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from eventstore.chain import verify_rows
from eventstore.location import PostgresLog
from eventstore.log import append_many, chain_rows, event_record, record_deliveries
from eventstore.pg.connect import connect, prepare
from eventstore.pg.sql import PgSql
from eventstore.pg.writer import PgGroupCommitWriter
from eventstore.records import DeliveryRecord
from eventstore.transfer import export_log
from eventstore.writer import AppendJob, Pending
from projections.rebuild import rebuild
from tests.support.ingest import user_created
from tests.support.postgres import PostgresServer
from tests.support.server import Server, running_server
from tests.support.signing import new_event_id, new_secret
from tests.support.store import query
from tests.test_export_import import BODIES, CLI, events, fill

WRITERS = 3
EVENTS_PER_WRITER = 30


def _record(event_id: str | None = None) -> Any:
    return event_record(event_id=event_id or new_event_id(), svix_timestamp=1,
                        received_at="2026-01-01T00:00:00.000Z", body=user_created())  # fmt: skip


def _append(log: PostgresLog, count: int = 1) -> None:
    """Append ``count`` events the way the writer does (table lock, chain, one commit)."""
    with closing(PgSql(connect(log, 5000), log)) as sql:
        sql.execute("BEGIN")
        sql.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        records = [_record() for _ in range(count)]
        append_many(sql, records)
        record_deliveries(sql, [DeliveryRecord("t", "stored", r.event_id) for r in records])
        sql.execute("COMMIT")


@pytest.fixture(scope="module")
def log(postgres_server: PostgresServer) -> PostgresLog:
    """A migrated PostgreSQL log holding two events (shared: the tests that use it change
    nothing, or roll back)."""
    created = postgres_server.new_database()
    prepare(created)
    _append(created, 2)
    return created


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET event_type = 'user.deleted'",
        "UPDATE events SET body = 'x'::bytea",
        "UPDATE events SET chain = repeat('0', 64)",
        "DELETE FROM events WHERE position = 2",
        "TRUNCATE events CASCADE",
        "UPDATE deliveries SET outcome = 'rejected'",
        "INSERT INTO deliveries (received_at, outcome) VALUES ('t', 'stored')",
        "INSERT INTO redactions VALUES (1, 'msg_x', 'x'::bytea)",
        "INSERT INTO events SELECT * FROM events WHERE position = 1 "
        "ON CONFLICT (event_id) DO UPDATE SET body = 'x'::bytea",
    ],
)
def test_the_database_refuses_to_change_what_was_appended(log: PostgresLog, statement: str) -> None:
    before = _rows(log, "SELECT * FROM events ORDER BY position")
    with psycopg.connect(log.url, autocommit=True) as conn:
        if statement.startswith("INSERT INTO deliveries"):
            conn.execute(statement.encode())  # an append: allowed (the control)
            return
        refused = r"append-only|later clerk-audit|not the one after"
        with pytest.raises(psycopg.errors.IntegrityError, match=refused):
            conn.execute(statement.encode())
    assert _rows(log, "SELECT * FROM events ORDER BY position") == before


def test_a_position_must_be_the_one_after_the_last(log: PostgresLog) -> None:
    """Whoever writes, a hole or a reordering is refused: position n + 1 can only be appended
    once n is committed, so positions commit in order."""
    with closing(PgSql(connect(log, 5000), log)) as sql:
        sql.execute("BEGIN")
        sql.execute("SELECT 1")
        with pytest.raises(Exception, match="not the one after"):
            sql.execute(
                "INSERT INTO events (position, event_id, received_at, svix_timestamp, body, "
                "body_sha256, status, quarantine_reason, chain) "
                "VALUES (4, 'msg_gap', 't', 1, 'x'::bytea, repeat('a', 64), 'quarantined', "
                "'r', repeat('b', 64))"
            )
        sql.execute("ROLLBACK")
    with (
        psycopg.connect(log.url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        conn.execute(b"INSERT INTO events SELECT 3, event_id, event_type, object_type, "
                         b"object_id, instance_id, occurred_at, received_at, svix_timestamp, "
                         b"body, body_sha256, status, quarantine_reason, chain FROM events "
                         b"WHERE position = 2")  # fmt: skip


def _rows(log: PostgresLog, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(log.url, autocommit=True) as conn:
        return conn.execute(sql.encode()).fetchall()


def _read_after(conn: psycopg.Connection[Any], after: int) -> list[tuple[int, str]]:
    """A follower's read: what the log holds past its checkpoint, in position order."""
    return conn.execute(
        "SELECT position, event_id FROM events WHERE position > %s ORDER BY position", (after,)
    ).fetchall()


def _wait_for_lock_waiter(log: PostgresLog) -> None:
    """Until a transaction waits for the append lock (no sleeping for timing: this polls what
    the database says)."""
    sql = ("SELECT count(*) FROM pg_locks WHERE NOT granted "
           "AND relation = 'events'::regclass")  # fmt: skip
    with psycopg.connect(log.url, autocommit=True) as conn:
        for _ in range(10_000):
            if conn.execute(sql.encode()).fetchone() == (1,):
                return
            threading.Event().wait(0.005)
    raise AssertionError("no writer waited for the append lock")


def test_a_follower_never_skips_an_append_that_commits_late(pg_log: PostgresLog) -> None:
    """The known trap: A takes position 3 and stays inside its transaction; B's group comes
    after. B waits for A (the table lock), the follower sees neither until A commits, then
    3 before 4: nothing is skipped and nothing read twice."""
    log = pg_log
    prepare(log)
    _append(log, 2)
    held = PgSql(connect(log, 30_000), log)
    held.execute("BEGIN")
    held.execute("LOCK TABLE events IN EXCLUSIVE MODE")
    (appended,) = append_many(held, [_record("msg_held")])
    assert appended == ("stored", 3)
    settled: queue.Queue[list[Pending[Any]]] = queue.Queue()
    writer = PgGroupCommitWriter(log, busy_timeout_ms=30_000, settle=settled.put)
    try:
        job = AppendJob("msg_later", 1, "2026-01-01T00:00:00.000Z", user_created())
        writer.enqueue(job, None)
        _wait_for_lock_waiter(log)
        with psycopg.connect(log.url, autocommit=True) as follower:
            assert _read_after(follower, 2) == []
            held.execute("COMMIT")
            (later,) = settled.get(timeout=30)
            assert not later.failed and later.outcome.position == 4
            assert _read_after(follower, 2) == [(3, "msg_held"), (4, "msg_later")]
    finally:
        writer.close()
        held.close()


def _follow(log: PostgresLog, stop: threading.Event, seen: list[tuple[int, str]]) -> None:
    """Follow the log by position, as the projector does, until ``stop`` and caught up."""
    with psycopg.connect(log.url, autocommit=True) as conn:
        while True:
            stopping = stop.is_set()
            rows = _read_after(conn, seen[-1][0] if seen else 0)
            seen.extend(rows)
            if stopping and not rows:
                return
            if not rows:
                stop.wait(0.005)  # the projector's idle pause: not a timing assumption


def _deliver(server: Server, writer: int, client: httpx.Client) -> list[str]:
    stored = []
    for n in range(EVENTS_PER_WRITER):
        event_id = f"msg_w{writer}_{n}_{new_event_id()}"
        response = server.post(event_id, user_created(), client=client)
        assert response.status_code == 200, response.text
        stored.append(event_id)
    return stored


@pytest.mark.slow
def test_several_serve_processes_append_in_one_order_that_a_follower_reads_once(
    pg_log: PostgresLog, tmp_path: Path
) -> None:
    """Three ``serve`` processes on one database, two clients each, and a follower reading
    ``position > checkpoint`` all along: every acknowledged event is read exactly once, in a
    gapless order, and the chain over that order verifies."""
    secret = new_secret()
    seen: list[tuple[int, str]] = []
    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(pg_log, stop, seen))
    env = {"CLERK_AUDIT_PROJECTIONS_DB": str(tmp_path / "p.db")}
    with ExitStack() as stack:
        servers = [stack.enter_context(running_server(pg_log, secret, env=env,
                                                      extra=("--no-projector",)))
                   for _ in range(WRITERS)]  # fmt: skip
        clients = [stack.enter_context(httpx.Client(timeout=30)) for _ in range(2 * WRITERS)]
        follower.start()
        with ThreadPoolExecutor(2 * WRITERS) as pool:
            batches = pool.map(lambda n: _deliver(servers[n % WRITERS], n, clients[n]),
                               range(2 * WRITERS))  # fmt: skip
            acknowledged = [event_id for batch in batches for event_id in batch]
        stop.set()
        follower.join(timeout=60)
    total = 2 * WRITERS * EVENTS_PER_WRITER
    assert [position for position, _ in seen] == list(range(1, total + 1))
    assert sorted(event_id for _, event_id in seen) == sorted(acknowledged)
    with closing(PgSql(connect(pg_log, 5000), pg_log)) as sql:
        assert verify_rows(chain_rows(sql)).broken is None


def _pipe(source: str, target: str, tmp_path: Path) -> str:
    """``clerk-audit export | clerk-audit import -`` from the log ``source`` to ``target``
    (both through ``CLERK_AUDIT_DB``, as an operator would pass a URL); the import's report."""
    env = {**os.environ, "CLERK_AUDIT_DB": source}
    exporter = subprocess.Popen([str(CLI), "export"], stdout=subprocess.PIPE, env=env)
    into = {**env, "CLERK_AUDIT_DB": target}
    done = subprocess.run([str(CLI), "import", "-"], stdin=exporter.stdout, capture_output=True,
                          text=True, env=into, timeout=120)  # fmt: skip
    assert exporter.stdout is not None
    exporter.stdout.close()
    assert exporter.wait(timeout=120) == 0
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_store_moves_from_sqlite_to_postgresql_and_back_unchanged(
    pg_log: PostgresLog, tmp_path: Path
) -> None:
    """Every shape of body, through the CLI's pipe both ways: the same rows (chain and
    received_at included), the same export bytes, the same state digest, a verifying chain."""
    source, back = tmp_path / "source.db", tmp_path / "back.db"
    fill(source, BODIES)
    assert "10 imported (positions 1..10)" in _pipe(str(source), pg_log.url, tmp_path)
    assert query(pg_log, "SELECT * FROM events ORDER BY position") == events(source)
    export_log(source, tmp_path / "sqlite.ndjson")
    export_log(pg_log, tmp_path / "pg.ndjson")
    assert (tmp_path / "pg.ndjson").read_bytes() == (tmp_path / "sqlite.ndjson").read_bytes()
    (mark,) = query(pg_log, "SELECT count(*) AS n FROM imported_events")
    assert mark["n"] == 10
    with closing(PgSql(connect(pg_log, 5000), pg_log)) as sql:
        assert verify_rows(chain_rows(sql)).broken is None

    expected = rebuild(source, tmp_path / "source.projections.db").digest
    assert rebuild(pg_log, tmp_path / "pg.projections.db").digest == expected

    assert "10 imported" in _pipe(pg_log.url, str(back), tmp_path)
    assert events(back) == events(source)
    assert "0 imported, 10 already stored" in _pipe(pg_log.url, str(back), tmp_path)
