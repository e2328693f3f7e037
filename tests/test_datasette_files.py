"""``clerk-audit datasette`` on a store's two files: the projections as ``audit``, the log as
``log``, queries across both, and a rebuild's swap followed without a restart.

The files are built with plain sqlite3 (a log with ``events`` and ``deliveries``, projections
with ``audit_timeline``), so this tests Datasette's side alone: the projections path is a symlink
to a generation file (``store.projections.g1.db``), and a swap re-points it atomically, as
``clerk-audit rebuild`` does. Datasette runs as a real ``clerk-audit datasette`` process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventstore.engine import sqlite3
from eventstore.schema import APPLICATION_ID
from tests.support.store import dump

CLI = Path(sys.executable).with_name("clerk-audit")
_RUNNING = re.compile(r"Uvicorn running on (http://\S+)")
START_TIMEOUT = 30.0

LOG_SCHEMA = """
CREATE TABLE events (
    position INTEGER PRIMARY KEY, event_id TEXT UNIQUE, event_type TEXT, object_type TEXT,
    object_id TEXT, occurred_at TEXT, received_at TEXT, body BLOB, body_sha256 TEXT,
    status TEXT, quarantine_reason TEXT);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY, event_id TEXT, received_at TEXT, svix_timestamp INTEGER,
    outcome TEXT, reason TEXT, remote_addr TEXT, user_agent TEXT, body_sha256 TEXT);
"""
PROJECTIONS_SCHEMA = """
CREATE TABLE audit_timeline (
    position INTEGER, event_id TEXT PRIMARY KEY, occurred_at TEXT, event_type TEXT,
    object_type TEXT, object_id TEXT, user_id TEXT, organization_id TEXT, actor_id TEXT,
    client_ip TEXT, user_agent TEXT, summary TEXT);
CREATE TABLE projection_errors (position INTEGER PRIMARY KEY, event_id TEXT, error TEXT);
CREATE TABLE _projection_meta (key TEXT PRIMARY KEY, value TEXT);
"""


def write_log(path: Path) -> None:
    """A log of two events (one quarantined) and three deliveries (one rejected)."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(LOG_SCHEMA)
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?, 'user', 'user_1', ?, ?, ?, 'ab', ?, ?)",
            [
                (1, "msg_1", "user.created", "2026-01-01T00:00:00.000Z",
                 "2026-01-01T00:00:01.000Z", b"{}", "ok", None),
                (2, "msg_2", None, None, "2026-01-02T00:00:01.000Z", b"[1]", "quarantined",
                 "not an object"),
            ],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO deliveries (id, event_id, received_at, svix_timestamp, outcome, reason)"
            " VALUES (?, ?, '2026-01-02T00:00:00.000Z', 1767312000, ?, ?)",
            [(1, "msg_1", "stored", None), (2, "msg_2", "quarantined", "not an object"),
             (3, "msg_x", "rejected", "bad signature")],
        )  # fmt: skip


def write_generation(path: Path, event_ids: list[str]) -> None:
    """A projections file whose timeline has one row per event id (positions 1, 2, ...)."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(PROJECTIONS_SCHEMA)
        conn.executemany(
            "INSERT INTO audit_timeline (position, event_id, occurred_at, event_type, summary)"
            " VALUES (?, ?, '2026-01-01T00:00:00.000Z', 'user.created', ?)",
            [(n, e, f"summary of {e}") for n, e in enumerate(event_ids, 1)],
        )
        conn.execute("INSERT INTO _projection_meta VALUES ('position', ?)", [len(event_ids)])


def point(link: Path, target: str) -> None:
    """Re-point the symlink ``link`` at ``target`` atomically, as a rebuild swaps generations."""
    new = link.with_name(link.name + ".new")
    os.symlink(target, new)
    os.replace(new, link)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A log at ``store.db``, its projections at ``store.projections.db`` -> generation 1."""
    log = tmp_path / "store.db"
    write_log(log)
    write_generation(tmp_path / "store.projections.g1.db", ["msg_1"])
    point(tmp_path / "store.projections.db", "store.projections.g1.db")
    return log


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CLERK_AUDIT_PROJECTIONS_DB"}


@contextmanager
def running_datasette(log: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A real ``clerk-audit datasette`` on a free port: the process and its URL."""
    command = [str(CLI), "datasette", "--db", str(log), "--", "--port", "0", *extra]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, env=_env())  # fmt: skip
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if _RUNNING.search(line):
                found.set()
        found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        match = _RUNNING.search("".join(lines)) if found.wait(START_TIMEOUT) else None
        if match is None:
            raise RuntimeError("datasette did not start:\n" + "".join(lines))
        yield process, match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


def rows(client: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    response = client.get(path, params={**params, "_shape": "array"})
    assert response.status_code == 200, response.text
    return list(response.json())


def open_files(pid: int, name: str) -> list[str]:
    """What the process's file descriptors point at, for those whose path contains ``name``."""
    targets = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return [t for t in targets if name in t]


def snapshot(*paths: Path) -> list[str]:
    """Each file as SQL text: schema and every row."""
    dumps = []
    for path in paths:
        dumps.append(dump(path))
    return dumps


def test_the_projections_are_audit_and_the_log_is_log(store: Path) -> None:
    with running_datasette(store) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        served = {d["name"]: d for d in client.get("/-/databases.json").json()}
        assert set(served) == {"audit", "log"}  # no _memory, nothing else
        assert served["audit"]["path"].endswith("store.projections.g1.db")
        assert all(d["is_mutable"] for d in served.values())
        assert [r["event_id"] for r in rows(client, "/audit/audit_timeline.json")] == ["msg_1"]
        assert [r["position"] for r in rows(client, "/log/events.json")] == [2, 1]
        assert client.get("/audit/events.json").status_code == 404
        assert "Events the projector could not apply" in client.get("/audit/projection_errors").text
        assert "The svix-id of the event" in client.get("/log/events").text


def test_queries_on_audit_read_the_log(store: Path) -> None:
    with running_datasette(store) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        joined = rows(client, "/audit.json", sql="select t.summary, e.status from audit_timeline"
                      " as t join log.events as e using (position)")  # fmt: skip
        assert joined == [{"summary": "summary of msg_1", "status": "ok"}]
        quarantined = rows(client, "/audit/quarantined_events.json")
        assert [(r["event_id"], r["body_bytes"]) for r in quarantined] == [("msg_2", 3)]
        refused = rows(client, "/audit/rejected_deliveries.json")
        assert [(r["outcome"], r["reason"]) for r in refused] == [("rejected", "bad signature")]
        assert rows(client, "/audit/events_per_day.json")[0]["events"] == 1


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_swapped_generation_shows_at_the_next_request(store: Path) -> None:
    folder = store.parent
    with (
        running_datasette(store, "--setting", "num_sql_threads", "6") as (process, url),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        # Concurrent requests, so that several SQL threads hold a connection to generation 1.
        page = "/audit/audit_timeline.json?_facet=event_type&_facet=summary"
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: client.get(page).status_code, range(24)))
        assert answers == [200] * 24
        assert len(open_files(process.pid, "store.projections.g1.db")) > 2
        write_generation(folder / "store.projections.g2.db", ["msg_1", "msg_new"])
        point(folder / "store.projections.db", "store.projections.g2.db")
        for suffix in ("", "-wal", "-shm"):
            (folder / f"store.projections.g1.db{suffix}").unlink(missing_ok=True)
        timeline = rows(client, "/audit.json", sql="select event_id from audit_timeline")
        assert [r["event_id"] for r in timeline] == ["msg_1", "msg_new"]
        # The old generation's connections closed at the swap, not when each thread next runs.
        assert open_files(process.pid, "store.projections.g1.db") == []
        served = {d["name"]: d["path"] for d in client.get("/-/databases.json").json()}
        assert served["audit"].endswith("store.projections.g2.db")
        joined = rows(client, "/audit.json", sql="select count(*) as n from log.events")
        assert joined == [{"n": 2}]
        assert [d["name"] for d in client.get("/-/databases.json").json()] == ["audit", "log"]
        assert len(rows(client, "/audit/audit_timeline.json")) == 2


WRITES = [
    "delete from audit_timeline",
    "delete from log.events",
    "insert into log.deliveries (outcome) values ('stored')",
    "update _projection_meta set value = '0'",
    "attach database 'x.db' as x",
    "select 1; delete from log.events",
]


def test_nothing_writes(store: Path) -> None:
    files = (store, store.with_name("store.projections.db"))
    before = snapshot(*files)
    with running_datasette(store) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        for sql in WRITES:
            assert client.get("/audit.json", params={"sql": sql}).status_code == 400, sql
            assert client.get("/log.json", params={"sql": sql}).status_code == 400, sql
        for name in ("quarantined_events", "rejected_deliveries"):  # a POST runs only writes
            assert client.post(f"/audit/{name}", data={}).status_code >= 400
    assert snapshot(*files) == before


def test_extra_datasette_arguments_still_apply(store: Path) -> None:
    def get(path: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "datasette", "--db", str(store), "--", *extra, "--get", path],
            capture_output=True, text=True, timeout=60, env=_env(),
        )  # fmt: skip

    assert get("/audit.json?sql=select+1").returncode == 0
    assert get("/audit.json?sql=select+1", "--setting", "default_allow_sql", "off").returncode
    assert get("/log/deliveries.json", "--setting", "default_allow_sql", "off").returncode == 0


def _run(*args: str) -> tuple[int, str]:
    result = subprocess.run([str(CLI), "datasette", *args], capture_output=True, text=True,
                            timeout=60, env=_env())  # fmt: skip
    return result.returncode, result.stderr


def test_missing_projections_say_how_to_make_them(store: Path) -> None:
    (store.parent / "store.projections.db").unlink()
    code, stderr = _run("--db", str(store))
    projections = store.parent / "store.projections.db"
    assert code == 1 and stderr == (
        f"clerk-audit: error: no projections file at {projections} "
        f"(run `clerk-audit project --db {store}`)\n"
    )


def test_a_log_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE events (x)")
    code, stderr = _run("--db", str(other))
    assert code == 1
    assert (
        stderr == f"clerk-audit: error: {other} is a SQLite database but not a clerk-audit store\n"
    )


def test_the_projections_file_can_be_named(store: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    write_generation(elsewhere, ["msg_elsewhere"])
    result = subprocess.run(
        [str(CLI), "datasette", "--db", str(store), "--projections-db", str(elsewhere), "--",
         "--get", "/audit/audit_timeline.json?_shape=array"],
        capture_output=True, text=True, timeout=60, env=_env(),
    )  # fmt: skip
    assert result.returncode == 0 and "msg_elsewhere" in result.stdout
