"""The writer's group commit: a group's appends run as one batch, and a batch the store refuses
is run again job by job, so one refused job does not undo the others."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from eventstore.db import open_store
from eventstore.errors import EventConflict, StoreError
from eventstore.records import StoredEvent
from eventstore.writer import Appended, AppendJob, GroupCommitWriter, Pending, Projector
from projections import ensure_current, project
from tests.support.ingest import user_created

RECEIVED = "2026-12-02T00:00:00.000Z"


def _commit(
    path: Path, jobs: list[AppendJob], projector: Projector = project
) -> list[Pending[Any]]:
    """Run ``jobs`` as one group of the server's writer (its thread takes no other job)."""
    settled: list[list[Pending[Any]]] = []
    writer = GroupCommitWriter(path, project=projector, settle=settled.append)
    group = [Pending(job, None) for job in jobs]
    try:
        writer._commit(group)
    finally:
        writer.close()
    assert settled == [group]
    return group


def _store(path: Path) -> None:
    open_store(path, create=True).close()
    ensure_current(path)


def _job(event_id: str, body: bytes) -> AppendJob:
    return AppendJob(event_id, 1, RECEIVED, body, "127.0.0.1", "test")


def test_a_batch_stores_projects_and_records_every_delivery(db_path: Path) -> None:
    _store(db_path)
    first, second = user_created(), user_created()
    group = _commit(db_path, [_job("msg_a", first), _job("msg_b", second), _job("msg_a", first)])
    assert [p.outcome for p in group] == [
        Appended("stored", 1), Appended("stored", 2), Appended("duplicate", 1),
    ]  # fmt: skip
    conn = sqlite3.connect(db_path)
    outcomes = conn.execute("SELECT event_id, outcome FROM deliveries ORDER BY id").fetchall()
    assert outcomes == [("msg_a", "stored"), ("msg_b", "stored"), ("msg_a", "duplicate")]
    assert conn.execute("SELECT count(*) FROM users").fetchone() == (2,)
    assert conn.execute("SELECT count(*) FROM audit_timeline").fetchone() == (2,)


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
    assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)


def test_a_projection_that_fails_on_one_event_skips_only_that_events_projection(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a projection must not cost the other events of the batch their projection, nor
    any event its place in the log."""

    def buggy(conn: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
        if any(event.record.event_id == "msg_bug" for event in events):
            raise ValueError("a projection bug")
        project(conn, events)

    _store(db_path)
    group = _commit(
        db_path,
        [_job(event_id, user_created()) for event_id in ("msg_1", "msg_bug", "msg_2")],
        buggy,
    )
    assert [p.outcome for p in group] == [
        Appended("stored", 1), Appended("stored", 2), Appended("stored", 3),
    ]  # fmt: skip
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (3,)
    timeline = conn.execute("SELECT event_id FROM audit_timeline ORDER BY position").fetchall()
    assert timeline == [("msg_1",), ("msg_2",)]
    assert "projection failed for event msg_bug" in caplog.text
