"""The writer's group commit, on both logs: a group's appends run as one batch (on PostgreSQL,
pipelined), and a batch the store refuses is run again job by job, so one refused job does not
undo the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from eventstore.backends import open_writer, prepare_log
from eventstore.errors import EventConflict, StoreError
from eventstore.location import LogLocation, PostgresLog
from eventstore.writer import Appended, AppendJob, Pending
from projections.schema import PROJECTION_TABLES
from tests.support.ingest import user_created
from tests.support.store import query

RECEIVED = "2026-12-02T00:00:00.000Z"
_REFUSE_SQLITE = (
    "CREATE TRIGGER refuse_one BEFORE INSERT ON events WHEN NEW.event_id = 'msg_bad' "
    "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
)
_REFUSE_PG = (
    "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF NEW.event_id = 'msg_bad' THEN RAISE EXCEPTION 'refused for the test'; END IF; "
    "RETURN NEW; END $$",
    "CREATE TRIGGER refuse_one BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_one()",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> LogLocation:
    """An empty log of each kind, created as the server creates it."""
    location: LogLocation = tmp_path / "audit.db"
    if request.param == "postgresql":
        location = request.getfixturevalue("pg_log")
    prepare_log(location, 5000)
    return location


def _commit(log: LogLocation, jobs: list[AppendJob]) -> list[Pending[Any]]:
    """Run ``jobs`` as one group of the server's writer (its thread takes no other job)."""
    settled: list[list[Pending[Any]]] = []
    writer = open_writer(log, busy_timeout_ms=5000, settle=settled.append)
    group = [Pending(job, None) for job in jobs]
    try:
        writer._commit(group)  # type: ignore[attr-defined]
    finally:
        writer.close()
    assert settled == [group]
    return group


def _refuse_msg_bad(log: LogLocation) -> None:
    """Make the database itself refuse to append the event ``msg_bad``."""
    if isinstance(log, PostgresLog):
        with psycopg.connect(log.url, autocommit=True) as conn:
            for statement in _REFUSE_PG:
                conn.execute(statement.encode())
    else:
        query(log, _REFUSE_SQLITE)


def _tables(log: LogLocation) -> set[str]:
    if isinstance(log, PostgresLog):
        sql = ("SELECT table_name AS name FROM information_schema.tables "
               "WHERE table_schema = current_schema()")  # fmt: skip
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {row["name"] for row in query(log, sql)}


def _job(event_id: str, body: bytes) -> AppendJob:
    return AppendJob(event_id, 1, RECEIVED, body, "127.0.0.1", "test")


def test_a_batch_stores_and_records_every_delivery_and_writes_nothing_else(
    log: LogLocation,
) -> None:
    first, second = user_created(), user_created()
    group = _commit(log, [_job("msg_a", first), _job("msg_b", second), _job("msg_a", first)])
    assert [p.outcome for p in group] == [
        Appended("stored", 1), Appended("stored", 2), Appended("duplicate", 1),
    ]  # fmt: skip
    outcomes = query(log, "SELECT event_id, outcome FROM deliveries ORDER BY id")
    assert [(d["event_id"], d["outcome"]) for d in outcomes] == [
        ("msg_a", "stored"), ("msg_b", "stored"), ("msg_a", "duplicate"),
    ]  # fmt: skip
    positions = query(log, "SELECT position, event_id FROM events ORDER BY position")
    assert [(e["position"], e["event_id"]) for e in positions] == [(1, "msg_a"), (2, "msg_b")]
    projected = _tables(log) & {*PROJECTION_TABLES, "projection_errors"}
    assert not projected, "projected on the ack path"


def test_a_job_the_store_refuses_fails_alone_and_the_rest_of_its_batch_is_kept(
    log: LogLocation,
) -> None:
    _refuse_msg_bad(log)
    body, other = user_created(), user_created()
    group = _commit(
        log,
        [_job("msg_ok", body), _job("msg_bad", user_created()), _job("msg_ok", other)],
    )
    ok, bad, conflict = group
    assert (ok.failed, ok.outcome) == (False, Appended("stored", 1))
    assert bad.failed and isinstance(bad.outcome, StoreError)
    assert "refused for the test" in str(bad.outcome)
    assert conflict.failed and isinstance(conflict.outcome, EventConflict)
    assert [e["event_id"] for e in query(log, "SELECT event_id FROM events")] == ["msg_ok"]
    deliveries = query(log, "SELECT event_id, outcome FROM deliveries ORDER BY id")
    assert [(d["event_id"], d["outcome"]) for d in deliveries] == [
        ("msg_ok", "stored"), ("msg_ok", "conflict"),
    ]  # fmt: skip
