"""``clerk-audit rebuild``: counts and digest, ``--check``, repair, and rebuilding while the
server keeps ingesting and its projector follows the swap."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

from eventstore.db import open_store, transaction
from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path
from eventstore.samples import sample_body, sample_names
from eventstore.writer import AppendJob, append_jobs
from projections import rebuild
from projections.files import target
from projections.schema import PROJECTION_TABLES
from projections.tables import write_meta
from tests.support.direct import append_all, connect, digest, new_store
from tests.support.history import envelope
from tests.support.server import Server, running_server
from tests.support.signing import new_event_id

CLI = Path(sys.executable).with_name("clerk-audit")
_DIGEST = re.compile(r"state digest ([0-9a-f]{64})")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=300)


def _samples(db_path: Path) -> sqlite3.Connection:
    conn = new_store(db_path)
    append_all(conn, [(f"msg_{n}", sample_body(n)) for n in sample_names()])
    return conn


def _user_event(number: int) -> bytes:
    data = {
        "id": f"user_{number % 50:04d}",
        "first_name": f"F{number}",
        "last_name": "L",
        "created_at": 1_786_000_000_000,
        "updated_at": 1_786_000_000_000 + number,
    }
    return envelope("user.updated", data, 1_786_000_000_000 + number)


def test_rebuild_prints_counts_and_the_live_digest(db_path: Path) -> None:
    conn = _samples(db_path)
    live = digest(conn)
    conn.close()
    done = _cli("rebuild", "--db", str(db_path))
    assert done.returncode == 0, done.stderr
    assert f"rebuilt {len(sample_names())} events" in done.stdout
    for table in PROJECTION_TABLES:
        assert re.search(rf"^\s+{table}\s+\d+ rows$", done.stdout, re.M), table
    assert _DIGEST.search(done.stdout).group(1) == live  # type: ignore[union-attr]


def test_check_finds_a_tampered_projection_and_rebuild_repairs_it(db_path: Path) -> None:
    conn = _samples(db_path)
    assert _cli("rebuild", "--check", "--db", str(db_path)).returncode == 0
    conn.execute("UPDATE organizations SET name = 'Tampered'")
    checked = _cli("rebuild", "--check", "--db", str(db_path))
    assert checked.returncode == 1
    assert "differ from a rebuild in: organizations" in checked.stderr
    tampered = "SELECT count(*) FROM organizations WHERE name = 'Tampered'"
    assert conn.execute(tampered).fetchone()[0], "the check changed the live projections"
    conn.close()
    assert _cli("rebuild", "--db", str(db_path)).returncode == 0
    conn = connect(db_path)
    assert not conn.execute(tampered).fetchone()[0]
    conn.close()
    assert _cli("rebuild", "--check", "--db", str(db_path)).returncode == 0


def test_check_compares_at_the_live_position_not_the_log_head(db_path: Path) -> None:
    conn = _samples(db_path)
    projections = default_projections_path(db_path)
    with closing(sqlite3.connect(db_path)) as log:
        position = log.execute("SELECT max(position) FROM events").fetchone()[0]
    with closing(open_store(db_path)) as log, transaction(log):  # appended, not yet projected
        append_jobs(log, [AppendJob("msg_late", 1, "2026-01-01T00:00:00.000Z", _user_event(1))])
    checked = rebuild(db_path, projections, check=True)
    assert (checked.position, checked.differences) == (position, ())
    conn.close()


def test_progress_is_reported_for_every_event(db_path: Path) -> None:
    _samples(db_path).close()
    seen: list[int] = []
    result = rebuild(db_path, default_projections_path(db_path), progress=seen.append)
    assert sum(seen) == result.events == len(sample_names())


def test_quarantined_events_are_projected_nowhere(db_path: Path) -> None:
    conn = new_store(db_path)
    append_all(conn, [("msg_q1", b"not json"), ("msg_q2", b'{"no": "type"}'), ("msg_q3", b"[1]")])
    result = rebuild(db_path, default_projections_path(db_path))
    assert result.rows == dict.fromkeys((*PROJECTION_TABLES, "projection_errors"), 0)
    assert result.position == 3
    conn.close()


def test_projections_built_by_another_version_are_rebuilt_by_the_server(
    db_path: Path, secret: str
) -> None:
    conn = _samples(db_path)
    live = digest(conn)
    conn.execute("DELETE FROM audit_timeline")
    write_meta(conn, fingerprint="from-an-older-version")
    conn.close()
    with running_server(db_path, secret) as server:
        server.wait_projected()
    conn = connect(db_path)
    assert digest(conn) == live
    conn.close()


def _post_until(server: Server, stop: threading.Event, answers: list[int]) -> None:
    number = 0
    while not stop.is_set():
        number += 1
        answers.append(server.post(new_event_id(), _user_event(number)).status_code)


def test_rebuilding_while_the_server_ingests_loses_nothing(db_path: Path, secret: str) -> None:
    conn = new_store(db_path)
    append_all(conn, [(f"msg_seed_{n:05d}", _user_event(n)) for n in range(3000)])
    conn.close()
    answers: list[int] = []
    stop = threading.Event()
    generations = []
    with running_server(db_path, secret) as server:
        poster = threading.Thread(target=_post_until, args=(server, stop, answers))
        poster.start()
        try:
            outputs = []
            for _ in range(3):
                outputs.append(_cli("rebuild", "--db", str(db_path)))
                generations.append(target(server.projections_path))
        finally:
            stop.set()
            poster.join()
        server.wait_projected()
        assert _cli("rebuild", "--check", "--db", str(db_path)).returncode == 0
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    assert len(set(generations)) == 3, "a rebuild did not publish a new generation"
    positions = [int(re.search(r"up to position (\d+)", o.stdout).group(1)) for o in outputs]  # type: ignore[union-attr]
    assert max(positions) > 3000, "no event arrived during a rebuild"
    assert answers and set(answers) == {200}
    conn = connect(db_path)
    events, timeline = conn.execute(
        "SELECT (SELECT count(*) FROM log.events), (SELECT count(*) FROM audit_timeline)"
    ).fetchone()
    conn.close()
    assert events == timeline == 3000 + len(answers)
