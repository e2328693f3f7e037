"""``clerk-audit rebuild``: counts and digest, ``--check``, repair, and rebuilding while the
server keeps ingesting."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from eventstore.db import transaction
from eventstore.samples import sample_body, sample_names
from projections import rebuild, shadow, tables
from projections.digest import digests_in_workers, table_digests
from projections.pacing import Pacer
from projections.schema import PROJECTION_TABLES
from projections.tables import SHADOW_NAMES, create_indexes, create_tables, write_meta
from tests.support.direct import append_all, digest, new_store
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
    assert conn.execute("SELECT count(*) FROM organizations WHERE name = 'Tampered'").fetchone()[0]
    assert _cli("rebuild", "--db", str(db_path)).returncode == 0
    assert not conn.execute(
        "SELECT count(*) FROM organizations WHERE name = 'Tampered'"
    ).fetchone()[0]
    assert _cli("rebuild", "--check", "--db", str(db_path)).returncode == 0
    conn.close()


def test_progress_is_reported_for_every_event(db_path: Path) -> None:
    _samples(db_path).close()
    seen: list[int] = []
    result = rebuild(db_path, progress=seen.append)
    assert sum(seen) == result.events == len(sample_names())


def test_worker_processes_rebuild_exactly_what_one_process_does(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = _samples(db_path)
    append_all(conn, [(f"msg_u_{n:04d}", _user_event(n)) for n in range(400)])
    live, total = digest(conn), conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    monkeypatch.setattr(shadow, "SCAN_BATCH", 7)  # many chunks and jobs
    seen: list[int] = []
    pooled = rebuild(db_path, workers=2, progress=seen.append)
    alone = rebuild(db_path, workers=0)
    assert pooled.digest == alone.digest == live
    assert pooled.rows == alone.rows
    assert sum(seen) == pooled.events == total
    assert len(seen) > 50


def test_digests_read_by_worker_processes_are_those_of_one_process(db_path: Path) -> None:
    conn = _samples(db_path)
    position = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    assert digests_in_workers(db_path) == (position, table_digests(conn))
    conn.close()


def test_digests_are_read_again_when_the_server_appends_while_workers_read_them(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = _samples(db_path)
    read_by_workers: list[tuple[int, dict[str, str]] | None] = []

    def then_append(path: Path) -> tuple[int, dict[str, str]] | None:
        read_by_workers.append(digests_in_workers(path))
        append_all(conn, [("msg_u_late", _user_event(9999))])  # as the server would
        return read_by_workers[-1]

    monkeypatch.setattr(sys.modules["projections.rebuild"], "digests_in_workers", then_append)
    result = rebuild(db_path, workers=2)
    assert read_by_workers[0] is not None and read_by_workers[0][1] != result.digests
    assert result.digests == table_digests(conn)
    conn.close()


def _leftovers(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE '\\_rebuild\\_%' ESCAPE '\\'"
    )]  # fmt: skip


def test_old_tables_and_stopped_rebuilds_leftovers_are_dropped(db_path: Path) -> None:
    conn = _samples(db_path)
    live = digest(conn)
    with transaction(conn):  # what a rebuild stopped half-way leaves behind
        create_tables(conn, SHADOW_NAMES)
        conn.executemany(
            f"INSERT INTO {SHADOW_NAMES['audit_timeline']} (position, event_id) VALUES (?, ?)",
            [(n, f"msg_left_{n}") for n in range(20)],
        )
    assert len(_leftovers(conn)) == len(SHADOW_NAMES)
    assert rebuild(db_path).digest == live
    assert _leftovers(conn) == []
    assert rebuild(db_path, check=True).differences == ()
    assert _leftovers(conn) == []
    conn.close()


def test_old_tables_are_read_first_then_dropped_one_index_or_table_per_transaction(
    db_path: Path,
) -> None:
    conn = _samples(db_path)
    old = SHADOW_NAMES["audit_timeline"]
    with transaction(conn):
        create_tables(conn, SHADOW_NAMES)
        create_indexes(conn, SHADOW_NAMES, 99)
        conn.executemany(
            f"INSERT INTO {old} (position, event_id, summary) VALUES (?, ?, ?)",
            [(n, f"msg_left_{n}", "x" * 5000) for n in range(20)],  # past a page: overflow
        )
    indexes = {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql NOT NULL",
        (old,),
    )}  # fmt: skip
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    tables.drop_paced(Pacer(conn), {"audit_timeline": old})
    conn.set_trace_callback(None)
    assert not [name for name in _leftovers(conn) if "audit_timeline" in name]
    begins = [n for n, statement in enumerate(statements) if statement.startswith("BEGIN")]
    drops = [n for n, statement in enumerate(statements) if statement.startswith("DROP")]
    reads = [n for n, s in enumerate(statements) if s.startswith("SELECT") and f"FROM {old}" in s]
    assert {s.split()[2] for s in statements if s.startswith("DROP INDEX")} == indexes
    assert len(drops) == len(begins) == len(indexes) + 1  # each in a transaction of its own
    assert all(begin + 1 == drop for begin, drop in zip(begins, drops, strict=True))
    assert len(reads) == len(indexes) + 1 and max(reads) < min(begins)  # read before, outside
    conn.close()


def test_quarantined_events_are_projected_nowhere(db_path: Path) -> None:
    conn = new_store(db_path)
    append_all(conn, [("msg_q1", b"not json"), ("msg_q2", b'{"no": "type"}'), ("msg_q3", b"[1]")])
    assert rebuild(db_path).rows == dict.fromkeys(PROJECTION_TABLES, 0)
    assert conn.execute("SELECT count(*) FROM events WHERE status = 'quarantined'").fetchone() == (
        3,
    )
    conn.close()


def test_a_store_built_by_another_version_is_rebuilt_at_start(db_path: Path, secret: str) -> None:
    conn = _samples(db_path)
    live = digest(conn)
    conn.execute("DELETE FROM audit_timeline")
    write_meta(conn, fingerprint="from-an-older-version")
    conn.close()
    with running_server(db_path, secret) as server:
        assert "rebuilding them from the log" in server.log
    conn = sqlite3.connect(db_path)
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
    with running_server(db_path, secret) as server:
        poster = threading.Thread(target=_post_until, args=(server, stop, answers))
        poster.start()
        outputs = [_cli("rebuild", "--db", str(db_path)) for _ in range(3)]
        stop.set()
        poster.join()
        assert _cli("rebuild", "--check", "--db", str(db_path)).returncode == 0
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    positions = [int(re.search(r"up to position (\d+)", o.stdout).group(1)) for o in outputs]  # type: ignore[union-attr]
    assert max(positions) > 3000, "no event arrived during a rebuild"
    assert answers and set(answers) == {200}
    conn = sqlite3.connect(db_path)
    events, timeline = conn.execute(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM audit_timeline)"
    ).fetchone()
    conn.close()
    assert events == timeline == 3000 + len(answers)
