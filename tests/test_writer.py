"""The writer's group commit: a group's appends run as one batch, and a batch the store refuses
is run again job by job, so one refused job does not undo the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventstore.db import open_store
from eventstore.engine import sqlite3
from eventstore.errors import EventConflict, StoreError
from eventstore.writer import Appended, AppendJob, GroupCommitWriter, Pending
from projections.schema import PROJECTION_TABLES
from tests.support.ingest import user_created

RECEIVED = "2026-12-02T00:00:00.000Z"


def _commit(path: Path, jobs: list[AppendJob]) -> list[Pending[Any]]:
    """Run ``jobs`` as one group of the server's writer (its thread takes no other job)."""
    settled: list[list[Pending[Any]]] = []
    writer = GroupCommitWriter(path, settle=settled.append)
    group = [Pending(job, None) for job in jobs]
    try:
        writer._commit(group)
    finally:
        writer.close()
    assert settled == [group]
    return group


def _store(path: Path) -> None:
    open_store(path, create=True).close()


def _job(event_id: str, body: bytes) -> AppendJob:
    return AppendJob(event_id, 1, RECEIVED, body, "127.0.0.1", "test")


def test_a_batch_stores_and_records_every_delivery_and_writes_nothing_else(
    db_path: Path,
) -> None:
    _store(db_path)
    first, second = user_created(), user_created()
    group = _commit(db_path, [_job("msg_a", first), _job("msg_b", second), _job("msg_a", first)])
    assert [p.outcome for p in group] == [
        Appended("stored", 1), Appended("stored", 2), Appended("duplicate", 1),
    ]  # fmt: skip
    conn = sqlite3.connect(db_path)
    outcomes = conn.execute("SELECT event_id, outcome FROM deliveries ORDER BY id").fetchall()
    assert outcomes == [("msg_a", "stored"), ("msg_b", "stored"), ("msg_a", "duplicate")]
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {*PROJECTION_TABLES, "projection_errors"}, "projected on the ack path"


def test_a_job_the_store_refuses_fails_alone_and_the_rest_of_its_batch_is_kept(
    db_path: Path,
) -> None:
    _store(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute(
        "CREATE TRIGGER refuse_one BEFORE INSERT ON events WHEN NEW.event_id = 'msg_bad' "
        "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
    )
    conn.commit()
    body, other = user_created(), user_created()
    group = _commit(
        db_path,
        [_job("msg_ok", body), _job("msg_bad", user_created()), _job("msg_ok", other)],
    )
    ok, bad, conflict = group
    assert (ok.failed, ok.outcome) == (False, Appended("stored", 1))
    assert bad.failed and isinstance(bad.outcome, StoreError)
    assert "refused for the test" in str(bad.outcome)
    assert conflict.failed and isinstance(conflict.outcome, EventConflict)
    assert conn.execute("SELECT event_id FROM events").fetchall() == [("msg_ok",)]
    deliveries = conn.execute("SELECT event_id, outcome FROM deliveries ORDER BY id").fetchall()
    assert deliveries == [("msg_ok", "stored"), ("msg_ok", "conflict")]
