"""The projector: follows the log by position into the projections file, exactly once.

Rows and checkpoint commit together; quarantined and failing events still move the checkpoint
on (the failures are recorded in ``projection_errors``); a published rebuild is followed
without a restart; a file built by another version is refused until rebuilt.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from eventstore.db import open_store, transaction
from eventstore.engine import sqlite3
from eventstore.writer import AppendJob, append_jobs
from projections import Projector, fold, rebuild
from projections import apply as apply_module
from projections import tables as tables_module
from projections.files import target
from projections.follow import follow
from projections.projector import OutOfDate
from tests.support.direct import RECEIVED, connect, digest, project
from tests.support.ingest import user_created


@pytest.fixture
def log(db_path: Path) -> Path:
    open_store(db_path, create=True).close()
    return db_path


@pytest.fixture
def projections(db_path: Path) -> Path:
    return db_path.with_name("audit.projections.db")


def _append(log: Path, *bodies: bytes, first: int = 1) -> list[str]:
    ids = [f"msg_{n:04d}" for n in range(first, first + len(bodies))]
    jobs = [AppendJob(i, 1, RECEIVED, body) for i, body in zip(ids, bodies, strict=True)]
    with closing(open_store(log)) as conn, transaction(conn):
        append_jobs(conn, jobs)
    return ids


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def projector(log: Path, projections: Path) -> Iterator[Projector]:
    running = Projector(log, projections, batch=2)
    yield running
    running.close()


def test_it_creates_the_file_and_applies_each_batch_with_its_checkpoint(
    log: Path, projections: Path, projector: Projector
) -> None:
    _append(log, *(user_created() for _ in range(5)))
    assert [projector.step() for _ in range(4)] == [2, 2, 1, 0]
    assert projections.is_symlink() and target(projections) is not None
    assert _rows(projections, "SELECT value FROM _projection_meta WHERE key = 'position'") == [
        ("5",)
    ]
    assert _rows(projections, "SELECT count(*) FROM users") == [(5,)]


def test_a_batch_that_fails_to_commit_is_applied_again_whole_and_once(
    log: Path, projections: Path, projector: Projector, monkeypatch: pytest.MonkeyPatch
) -> None:
    _append(log, user_created(), user_created())

    def crash(conn: sqlite3.Connection, position: int) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr("projections.projector.set_checkpoint", crash)
    with pytest.raises(Exception, match="I/O error"):
        projector.step()
    assert _rows(projections, "SELECT count(*) FROM audit_timeline") == [(0,)]
    monkeypatch.setattr("projections.projector.set_checkpoint", tables_module.set_checkpoint)
    assert projector.run() == 2
    assert _rows(projections, "SELECT count(*), count(DISTINCT event_id) FROM audit_timeline") == [
        (2, 2)
    ]


def test_an_event_it_cannot_apply_is_recorded_and_the_others_are_applied(
    log: Path, projections: Path, projector: Projector, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _append(log, user_created(), user_created(), user_created())
    real = fold.timeline_row

    def buggy(event: Any) -> Any:
        if event.event_id == ids[1]:
            raise ValueError("a projection bug")
        return real(event)

    monkeypatch.setattr(apply_module, "timeline_row", buggy)
    assert projector.run() == 3
    assert _rows(projections, "SELECT event_id FROM audit_timeline ORDER BY position") == [
        (ids[0],),
        (ids[2],),
    ]
    ((position, event_id, error),) = _rows(projections, "SELECT * FROM projection_errors")
    assert (position, event_id) == (2, ids[1]) and "a projection bug" in error
    assert _rows(projections, "SELECT count(*) FROM users") == [(2,)]


def test_quarantined_events_move_the_checkpoint_and_are_projected_nowhere(
    log: Path, projections: Path, projector: Projector
) -> None:
    _append(log, b"not json", b'{"no": "type"}', user_created())
    assert projector.run() == 3
    assert _rows(projections, "SELECT position FROM audit_timeline") == [(3,)]
    assert _rows(projections, "SELECT count(*) FROM projection_errors") == [(0,)]


def test_a_published_rebuild_is_followed_without_a_restart(
    log: Path, projections: Path, projector: Projector
) -> None:
    _append(log, user_created())
    projector.run()
    before = target(projections)
    rebuild(log, projections)
    assert target(projections) != before
    assert before is not None and not before.exists(), "the old generation was not removed"
    _append(log, user_created(), first=2)
    assert projector.run() == 1
    assert _rows(projections, "SELECT position FROM audit_timeline ORDER BY position") == [
        (1,),
        (2,),
    ]


def test_a_file_built_by_another_version_is_refused_until_rebuilt(
    log: Path, projections: Path, projector: Projector
) -> None:
    _append(log, user_created())
    projector.run()
    with closing(sqlite3.connect(projections)) as conn, conn:
        conn.execute("UPDATE _projection_meta SET value = 'old' WHERE key = 'fingerprint'")
    projector.close()
    with pytest.raises(OutOfDate):
        Projector(log, projections).step()
    stop = threading.Event()
    follower = threading.Thread(target=follow, args=(log, projections, stop))
    follower.start()
    try:
        conn = connect(log)
        deadline = threading.Event()
        while not conn.execute("SELECT count(*) FROM audit_timeline").fetchone()[0]:
            assert not deadline.wait(0.01) and follower.is_alive()
            conn.close()
            conn = connect(log)
        conn.close()
    finally:
        stop.set()
        follower.join()


def test_live_projection_in_many_batches_equals_one_rebuild(log: Path, projections: Path) -> None:
    bodies = [user_created(f"user_{n % 7}") for n in range(40)]
    _append(log, *bodies)
    small = Projector(log, projections, batch=3)
    small.run()
    small.close()
    conn = connect(log)
    live = digest(conn)
    conn.close()
    assert rebuild(log, projections).digest == live
    assert project(connect(log)) == 0
