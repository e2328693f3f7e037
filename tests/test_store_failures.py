"""The store failing, at start-up and while running, against a real server: one clear error
line at start-up, 503 with Retry-After while running, and nothing already stored is lost."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from eventstore.db import open_store
from eventstore.engine import sqlite3
from tests.support.ingest import new_agent, post, sha256, signed, user_created
from tests.support.server import SECRET_ENV, Server, running_server, serve_command
from tests.support.signing import new_event_id, new_secret
from tests.support.startup import Run, error_line, run_all
from tests.support.store import deliveries_by_agent, events_by_id, query
from tests.test_crashes import assert_converged, assert_gone, gone, projector_pid, wait_caught_up

SECRET = new_secret()
NO_FILE_PRIVILEGES = "-dac_override,-dac_read_search,-fowner"


# --- start-up -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store written by a real server (two events), stopped cleanly: copy it, don't change it."""
    path = tmp_path_factory.mktemp("written") / "audit.db"
    with running_server(path, SECRET) as server, httpx.Client(timeout=30) as client:
        for _ in range(2):
            assert server.post(new_event_id(), user_created(), client=client).status_code == 200
        wait_caught_up(server, client)
    return path


def test_a_cleanly_stopped_server_leaves_the_whole_log_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with running_server(path, SECRET) as server, httpx.Client(timeout=30) as client:
        for _ in range(2):
            assert server.post(new_event_id(), user_created(), client=client).status_code == 200
        wait_caught_up(server, client)
    copy = tmp_path / "copy.db"  # a backup that copies the file alone, as the README says
    copy.write_bytes(path.read_bytes())
    assert query(copy, "SELECT count(*) AS n FROM events") == [{"n": 2}]
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "events were left in the WAL"


def _unprivileged() -> list[str] | None:
    """A command prefix that makes file permissions apply (None if there is none): nothing is
    needed unless we are root, who then runs the server without the capabilities that bypass
    them. (An unprivileged uid would do too, but it cannot run this virtualenv's interpreter
    when that lives under ``/root``, as it may.)"""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return None if setpriv is None else [setpriv, "--bounding-set", NO_FILE_PRIVILEGES, "--"]


def _other_program(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (text)")
        conn.commit()


DAMAGED: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda good: b"this is not a database\n" * 500,
    "truncated": lambda good: good[: len(good) // 2],
}
UNWRITABLE = {"read-only-folder": 0o555, "read-only-file": 0o755}
"""Each with a read-only store file in a folder of this mode."""


@dataclass(frozen=True)
class Start:
    done: subprocess.CompletedProcess[str]
    path: Path
    before: bytes | None


@pytest.fixture(scope="module")
def starts(
    written_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Start]]:
    """``clerk-audit serve`` started once on each broken store (all at once)."""
    prefix = _unprivileged()
    unwritable = UNWRITABLE if prefix is not None else {}
    paths = {case: tmp_path_factory.mktemp(case) / "audit.db"
             for case in ["missing-folder", "other-program", *DAMAGED, *unwritable]}  # fmt: skip
    paths["missing-folder"] = paths["missing-folder"].parent / "no-such-folder" / "audit.db"
    _other_program(paths["other-program"])
    good = written_store.read_bytes()
    for case, damage in DAMAGED.items():
        paths[case].write_bytes(damage(good))
    for case, folder_mode in unwritable.items():
        paths[case].write_bytes(good)
        paths[case].chmod(0o444)
        paths[case].parent.chmod(folder_mode)
    env = {**os.environ, SECRET_ENV: SECRET}
    as_user = prefix or []
    runs = {case: Run([*(as_user if case in unwritable else []), *serve_command(path)], env)
            for case, path in paths.items()}  # fmt: skip
    before = {case: path.read_bytes() if path.exists() else None for case, path in paths.items()}
    try:
        yield {case: Start(done, paths[case], before[case]) for case, done in run_all(runs).items()}
    finally:
        for case in unwritable:
            paths[case].parent.chmod(0o755)
            paths[case].chmod(0o644)


def test_a_missing_folder_is_one_clear_error_line(starts: dict[str, Start]) -> None:
    start = starts["missing-folder"]
    assert f"{start.path.parent} does not exist" in error_line(start.done)
    assert not start.path.parent.exists()


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_corrupt_file_is_one_clear_error_line_and_left_as_it_is(
    starts: dict[str, Start], case: str
) -> None:
    start = starts[case]
    line = error_line(start.done)
    assert str(start.path) in line and "not a readable SQLite database" in line
    assert start.path.read_bytes() == start.before


def test_a_sqlite_file_of_another_program_is_refused_and_left_as_it_is(
    starts: dict[str, Start],
) -> None:
    start = starts["other-program"]
    assert "not a clerk-audit store" in error_line(start.done)
    assert start.path.read_bytes() == start.before


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_an_unwritable_store_is_one_clear_error_line_and_loses_nothing(
    starts: dict[str, Start], case: str
) -> None:
    if case not in starts:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    start = starts[case]
    line = error_line(start.done)
    assert str(start.path) in line and "read-only" in line
    assert start.path.read_bytes() == start.before
    assert query(start.path, "SELECT count(*) AS n FROM events") == [{"n": 2}]


# --- while running --------------------------------------------------------------------------


def _assert_unavailable(response: httpx.Response) -> str:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert list(response.json()) == ["error"]
    error: str = response.json()["error"]
    assert "/" not in error, "a 503 must not show the server's file paths"
    return error


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as own:
        yield own


def test_a_store_locked_past_the_busy_timeout_gives_503_then_the_retry_is_stored(
    tmp_path: Path, client: httpx.Client
) -> None:
    env = {"CLERK_AUDIT_BUSY_TIMEOUT_MS": "200"}
    with running_server(tmp_path / "audit.db", SECRET, env=env) as server:
        earlier_id = new_event_id()
        assert server.post(earlier_id, user_created(), client=client).status_code == 200
        earlier = events_by_id(server.db_path, earlier_id)
        event_id, body, agent = new_event_id(), user_created(), new_agent()
        headers = signed(SECRET, event_id, body, agent=agent)
        refused_agent = new_agent()
        with closing(sqlite3.connect(server.sqlite_path, isolation_level=None)) as locker:
            locker.execute("BEGIN IMMEDIATE")
            assert "locked" in _assert_unavailable(post(client, server.ingest_url, body, headers))
            _assert_unavailable(client.get(f"{server.url}/healthz"))
            unsigned = {"svix-id": new_event_id(), "user-agent": refused_agent}
            assert post(client, server.ingest_url, body, unsigned).status_code == 400
            locker.execute("ROLLBACK")
        retried = post(client, server.ingest_url, body, headers)
        assert retried.status_code == 200 and retried.json()["status"] == "stored"
        assert events_by_id(server.db_path, earlier_id) == earlier
        unavailable, stored = deliveries_by_agent(server.db_path, agent)
        assert (unavailable["outcome"], stored["outcome"]) == ("unavailable", "stored")
        assert unavailable["event_id"] == stored["event_id"] == event_id
        assert unavailable["body_sha256"] == stored["body_sha256"] == sha256(body)
        assert "locked" in unavailable["reason"]
        refused = deliveries_by_agent(server.db_path, refused_agent)
        assert [row["outcome"] for row in refused] == ["rejected"]
        health = client.get(f"{server.url}/healthz").json()
        assert (health["status"], health["position"]) == ("ok", retried.json()["position"])


def _assert_503s(server: Server, client: httpx.Client) -> None:
    error = _assert_unavailable(server.post(new_event_id(), user_created(), client=client))
    assert "removed or replaced" in error
    _assert_unavailable(client.get(f"{server.url}/healthz"))


def test_a_store_file_replaced_while_running_gives_503_and_the_moved_file_keeps_everything(
    tmp_path: Path, client: httpx.Client
) -> None:
    path, aside = tmp_path / "audit.db", tmp_path / "aside.db"
    stored = [new_event_id() for _ in range(3)]
    with running_server(path, SECRET) as server:
        for event_id in stored:
            assert server.post(event_id, user_created(), client=client).status_code == 200
        os.rename(path, aside)  # say, a backup restored in its place: here, an empty store
        open_store(tmp_path / "other.db", create=True).close()
        os.rename(tmp_path / "other.db", path)
        replacement = path.read_bytes()
        _assert_503s(server, client)
    assert path.read_bytes() == replacement
    assert query(path, "SELECT count(*) AS n FROM events") == [{"n": 0}]
    rows = query(aside, "SELECT event_id FROM events ORDER BY position")
    assert [row["event_id"] for row in rows] == stored
    assert query(aside, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]


def test_a_store_file_deleted_while_running_gives_503(tmp_path: Path, client: httpx.Client) -> None:
    path = tmp_path / "audit.db"
    with running_server(path, SECRET) as server:
        assert server.post(new_event_id(), user_created(), client=client).status_code == 200
        path.unlink()
        _assert_503s(server, client)
        assert not path.exists()


def test_an_answered_event_survives_sigkill_and_the_file_opens(
    tmp_path: Path, client: httpx.Client
) -> None:
    path = tmp_path / "audit.db"
    event_id, body = new_event_id(), user_created()
    with running_server(path, SECRET) as server:
        response = server.post(event_id, body, client=client)
        assert response.status_code == 200
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    conn = open_store(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        row = conn.execute("SELECT position, body FROM events WHERE event_id = ?", (event_id,))
        assert row.fetchone() == (response.json()["position"], body)
    finally:
        conn.close()


# --- the projector process --------------------------------------------------------------------


def test_a_sigkilled_projector_is_restarted_by_the_server_and_catches_up(
    tmp_path: Path, client: httpx.Client
) -> None:
    path = tmp_path / "audit.db"
    with running_server(path, SECRET) as server:
        for _ in range(3):
            assert server.post(new_event_id(), user_created(), client=client).status_code == 200
        assert wait_caught_up(server, client) == 3
        killed = projector_pid(server)
        os.kill(killed, signal.SIGKILL)
        for _ in range(3):  # ingest never waits for the projector
            assert server.post(new_event_id(), user_created(), client=client).status_code == 200
        restarted = projector_pid(server, other_than=killed)
        assert gone(killed)
        assert wait_caught_up(server, client) == 6
        server.wait_for_log("the projector exited")
        assert projector_pid(server) == restarted
    assert_converged(path, 6)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_the_projector_ends_with_the_server_however_it_ends(
    tmp_path: Path, sig: signal.Signals
) -> None:
    with running_server(tmp_path / "audit.db", SECRET) as server:
        projector = projector_pid(server)
        server.process.send_signal(sig)  # not server.stop(): it waits for the output's end
        server.process.wait(timeout=30)
        assert_gone(projector, f"the projector outlived a server stopped by {sig.name}")


PR_SET_CHILD_SUBREAPER = 36


@contextmanager
def adopting_orphans() -> Iterator[None]:
    """Make this process the one that orphaned descendants are reparented to (instead of
    init), so a test can tell whether a process was reaped by its parent or left behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def test_a_server_stopped_by_sigterm_stops_its_projector_before_it_exits(tmp_path: Path) -> None:
    with adopting_orphans(), running_server(tmp_path / "audit.db", SECRET) as server:
        projector = projector_pid(server)
        server.stop(signal.SIGTERM)
        try:
            os.waitpid(projector, 0)  # only possible if it was left behind, to us
        except ChildProcessError:
            return  # the server stopped it and reaped it
        raise AssertionError("the server exited without stopping its projector")
