"""The instance filter (CLERK_AUDIT_INSTANCE_ID): another instance's events are kept in the log
and the timeline, marked, and out of the entity tables; the projections record the instance
they were built for, and a file built for another one is rebuilt.

Edges: no setting, the setting and an event of that instance, of another one, and an envelope
that names no instance (older events, backfilled snapshots).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.db import open_store, transaction
from eventstore.engine import sqlite3
from eventstore.errors import ConfigurationError
from eventstore.samples import sample_body
from eventstore.settings import INSTANCE_ENV, configured_instance
from eventstore.writer import AppendJob, append_jobs
from projections import Projector, ensure_current, rebuild, table_digests
from projections.files import target
from projections.projector import OutOfDate
from projections.schema import PROJECTION_TABLES, TIMELINE
from tests.support.direct import RECEIVED

HERE, OTHER = "ins_2zENH9hSpyNeH5z5VTFW826d8W8", "ins_1exampleSendExample000000"
CLI = Path(sys.executable).with_name("clerk-audit")
ENTITY_TABLES = tuple(t for t in PROJECTION_TABLES if t != TIMELINE)


def _user(user_id: str, instance: str | None) -> bytes:
    document = json.loads(sample_body("user.created"))
    document["data"]["id"] = user_id
    document.pop("instance_id", None)
    if instance is not None:
        document["instance_id"] = instance
    return json.dumps(document).encode()


def _log(path: Path, *bodies: bytes, ids: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = ids or [f"msg_{n:04d}" for n in range(1, len(bodies) + 1)]
    with closing(open_store(path, create=True)) as conn, transaction(conn):
        jobs = [AppendJob(i, 1, RECEIVED, b) for i, b in zip(ids, bodies, strict=True)]
        append_jobs(conn, jobs)
    return path


def _project(log: Path, instance: str | None) -> Path:
    projections = log.with_name("audit.projections.db")
    projector = Projector(log, projections, instance=instance)
    try:
        projector.run()
    finally:
        projector.close()
    return projections


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def _users(projections: Path) -> list[str]:
    return [row[0] for row in _rows(projections, "SELECT id FROM users ORDER BY id")]


MIXED = (_user("user_here", HERE), _user("user_other", OTHER), _user("user_none", None))


def test_the_setting_is_read_strictly() -> None:
    assert configured_instance({}) is None
    assert configured_instance({INSTANCE_ENV: "  "}) is None
    assert configured_instance({INSTANCE_ENV: f" {HERE} "}) == HERE
    for wrong in ("prod", "user_123", "ins_a b"):
        with pytest.raises(ConfigurationError, match=INSTANCE_ENV):
            configured_instance({INSTANCE_ENV: wrong})


def test_without_the_setting_every_instance_is_projected(db_path: Path) -> None:
    projections = _project(_log(db_path, *MIXED), None)
    assert _users(projections) == ["user_here", "user_none", "user_other"]
    assert _rows(projections, f"SELECT count(*) FROM {TIMELINE} WHERE other_instance IS NULL") == [
        (3,)
    ]


def test_another_instance_is_in_the_log_and_timeline_marked_and_in_no_entity(
    db_path: Path,
) -> None:
    log = _log(db_path, *MIXED)
    projections = _project(log, HERE)
    assert _users(projections) == ["user_here", "user_none"]
    timeline = _rows(projections, f"SELECT object_id, other_instance, summary FROM {TIMELINE} "
                                  "ORDER BY position")  # fmt: skip
    assert [row[:2] for row in timeline] == [
        ("user_here", None), ("user_other", OTHER), ("user_none", None),
    ]  # fmt: skip
    assert timeline[1][2].endswith(f"[other instance {OTHER}: not projected]")
    assert "other instance" not in timeline[0][2] + timeline[2][2]
    assert _rows(log, "SELECT instance_id FROM events ORDER BY position") == [
        (HERE,), (OTHER,), (None,),
    ]  # fmt: skip
    assert _rows(projections, "SELECT count(*) FROM projection_errors") == [(0,)]


def test_a_rebuild_with_the_same_setting_equals_the_live_projections(db_path: Path) -> None:
    log = _log(db_path, *MIXED, _user("user_other", OTHER), _user("user_here", HERE))
    projections = _project(log, HERE)
    with closing(sqlite3.connect(projections)) as conn:
        live = table_digests(conn)
    first = rebuild(log, projections, workers=0, instance=HERE)
    second = rebuild(log, projections, workers=0, instance=HERE)
    assert first.digests == live == second.digests
    assert rebuild(log, projections, check=True, workers=0, instance=HERE).differences == ()
    unfiltered = rebuild(log, projections, workers=0, instance=None)
    assert unfiltered.digests["users"] != live["users"]


def test_the_projections_record_their_instance_and_another_setting_rebuilds_them(
    db_path: Path,
) -> None:
    log = _log(db_path, *MIXED)
    projections = _project(log, HERE)
    assert ("instance_id", HERE) in _rows(projections, "SELECT key, value FROM _projection_meta")
    with pytest.raises(OutOfDate, match="another instance"):
        Projector(log, projections, instance=None).step()
    with pytest.raises(ConfigurationError, match=INSTANCE_ENV):
        rebuild(log, projections, check=True, workers=0, instance=OTHER)
    assert ensure_current(log, projections, HERE) is False
    before = target(projections)
    assert ensure_current(log, projections, OTHER) is True
    assert target(projections) != before
    assert ("instance_id", OTHER) in _rows(projections, "SELECT key, value FROM _projection_meta")
    assert _users(projections) == ["user_none", "user_other"]


def test_the_commands_read_the_setting(db_path: Path) -> None:
    log = _log(db_path, *MIXED)
    env = {**os.environ, INSTANCE_ENV: HERE}
    done = subprocess.run([str(CLI), "project", "--db", str(log)], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    projections = log.with_name("audit.projections.db")
    assert _users(projections) == ["user_here", "user_none"]
    env[INSTANCE_ENV] = "production"
    wrong = subprocess.run([str(CLI), "rebuild", "--db", str(log)], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert wrong.returncode != 0 and INSTANCE_ENV in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1


_INSTANCES = st.sampled_from([HERE, OTHER, "ins_third000000000000000000000", None])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(0, 3), _INSTANCES), min_size=1, max_size=12))
def test_the_entities_are_those_of_the_log_without_the_other_instances(
    tmp_path_factory: pytest.TempPathFactory, events: list[tuple[int, str | None]]
) -> None:
    """Filtering at projection time gives the entity tables of a log that never held the
    other instances' events."""
    folder = tmp_path_factory.mktemp("instances")
    bodies = [_user(f"user_{n}", instance) for n, instance in events]
    ids = [f"msg_{n:04d}" for n in range(len(events))]
    kept = [n for n, (_, instance) in enumerate(events) if instance in (HERE, None)]
    filtered = _project(_log(folder / "all" / "audit.db", *bodies, ids=ids), HERE)
    alone = _project(_log(folder / "kept" / "audit.db", *(bodies[n] for n in kept),
                          ids=[ids[n] for n in kept]), None)  # fmt: skip
    with closing(sqlite3.connect(filtered)) as a, closing(sqlite3.connect(alone)) as b:
        mine, theirs = table_digests(a), table_digests(b)
    assert {t: mine[t] for t in ENTITY_TABLES} == {t: theirs[t] for t in ENTITY_TABLES}
