"""Crashes and long readers against the real server (CONTRACT §3, §5; issue 12, "Bad input and
faults"): SIGKILL of the server, and separately of its projector, at random moments under
load; a reader holding long read transactions on both files.

Each time, every event that was answered 2xx is in the log exactly once, and the projections
converge to what a rebuild of the log gives. The random moments come from a seeded
``random.Random``: the seed is printed (``-rP`` or a failure shows it), and
``CLERK_AUDIT_TEST_SEED`` replays it.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventstore.engine import sqlite3
from eventstore.paths import projections_path
from projections.digest import state_digest, table_digests
from projections.tables import checkpoint
from tests.support.history import BASE_MS, envelope
from tests.support.server import Server, running_server
from tests.support.signing import new_event_id, new_secret

CLI = Path(sys.executable).with_name("clerk-audit")
DIGEST = re.compile(r"state digest ([0-9a-f]{64})")
SECRET = new_secret()
CLIENTS = 4
CATCH_UP_S = 30.0
"""The longest a test waits for the projector to reach the log's head (well past its
restart pauses and retry pauses)."""


# --- helpers shared with test_disk_full and test_store_failures ------------------------------


def seeded(label: str) -> random.Random:
    """A random generator whose seed is printed (``CLERK_AUDIT_TEST_SEED`` replays one)."""
    seed = int(os.environ.get("CLERK_AUDIT_TEST_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{label}: seed {seed} (replay with CLERK_AUDIT_TEST_SEED={seed})")
    return random.Random(seed)


def body_for(rng: random.Random) -> bytes:
    """A signed-ready event body: new users, updates and deletes of a few shared users (so the
    ordering rule decides what the projections hold), and organization updates."""
    kind = rng.random()
    at = BASE_MS + rng.randrange(10_000_000)
    shared = f"user_crash{rng.randrange(40):04d}"
    if kind < 0.4:
        data = {"id": "user_" + os.urandom(10).hex(), "first_name": "New", "created_at": at,
                "updated_at": at, "email_addresses": []}  # fmt: skip
        return envelope("user.created", data, at)
    if kind < 0.8:
        data = {"id": shared, "first_name": f"F{at}", "created_at": BASE_MS, "updated_at": at}
        return envelope("user.updated", data, at)
    if kind < 0.85:
        return envelope("user.deleted", {"id": shared, "deleted": True, "object": "user"}, at)
    data = {"id": f"org_crash{rng.randrange(10):03d}", "name": f"Org {at}", "slug": f"o{at}",
            "created_at": BASE_MS, "updated_at": at}  # fmt: skip
    return envelope("organization.updated", data, at)


def health(server: Server, client: httpx.Client) -> dict[str, Any]:
    response = client.get(f"{server.url}/healthz")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def wait_until(
    condition: Callable[[], bool], what: str, within: float = CATCH_UP_S, every: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(every)


def wait_caught_up(server: Server, client: httpx.Client, within: float = CATCH_UP_S) -> int:
    """Poll ``/healthz`` until ``projected == position``; returns that position."""
    seen: dict[str, Any] = {}

    def caught_up() -> bool:
        seen.update(health(server, client))
        return bool(seen["projected"] == seen["position"])

    try:
        wait_until(caught_up, "the projector to reach the log's head", within)
    except AssertionError as error:
        raise AssertionError(f"{error}; last /healthz {seen}\n{server.log[-3000:]}") from None
    return int(seen["position"])


def _children(pid: int) -> list[tuple[int, bytes]]:
    """``(pid, cmdline)`` of each live child of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append((int(entry.name), command))
    return found


def child_pid(
    server: Server, marker: bytes, other_than: int | None = None, within: float = 15.0
) -> int:
    """The pid of the server's child whose command line holds ``marker``, waiting for one
    (other than ``other_than``) to be running."""
    found: list[int] = []

    def running() -> bool:
        found[:] = [pid for pid, command in _children(server.process.pid)
                    if marker in command and pid != other_than]  # fmt: skip
        return len(found) == 1

    wait_until(running, f"the server's {marker.decode(errors='replace')} process", within)
    return found[0]


def projector_pid(server: Server, other_than: int | None = None, within: float = 15.0) -> int:
    """The pid of the server's projector child (``project --follow``)."""
    return child_pid(server, b"project\0--follow", other_than, within)


def writer_pid(server: Server, other_than: int | None = None, within: float = 15.0) -> int:
    """The pid of the server's writer child (``eventstore.writer_process``)."""
    return child_pid(server, b"eventstore.writer_process", other_than, within)


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` has exited (or is a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def assert_gone(pid: int, why: str) -> None:
    """``pid`` exits within a few seconds; else it is killed (so a failing test leaves no process
    holding the server's output pipe) and the test fails saying ``why``."""
    if not gone(pid):
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(why)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120, env=env)


def live_digest(db_path: Path, projections: Path | None = None) -> tuple[int, str]:
    """``(checkpoint, state digest)`` of the live projections file, read like an outside tool
    would (read-only, one snapshot)."""
    path = (projections or projections_path(db_path, env={})).resolve()
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        conn.execute("BEGIN")
        return checkpoint(conn), state_digest(table_digests(conn))


def assert_converged(db_path: Path, position: int, projections: Path | None = None) -> None:
    """The live projections are at ``position`` and equal a rebuild: ``rebuild --check`` exits
    0 and ``rebuild`` prints the live state digest."""
    at, digest = live_digest(db_path, projections)
    assert at == position
    extra = ["--projections-db", str(projections)] if projections else []
    checked = cli("rebuild", "--check", "--db", str(db_path), *extra)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rebuilt = cli("rebuild", "--db", str(db_path), *extra)
    assert rebuilt.returncode == 0, rebuilt.stderr
    match = DIGEST.search(rebuilt.stdout)
    assert match is not None, rebuilt.stdout
    assert match.group(1) == digest, "the live projections differ from a rebuild of the log"


@dataclass
class Load:
    """Client threads posting signed events to a server until stopped (or it goes away)."""

    server: Server
    rng: random.Random
    clients: int = CLIENTS
    acked: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    """event_id -> (body, position) of every 2xx."""
    unanswered: dict[str, bytes] = field(default_factory=dict)
    """Events whose request failed without an answer (the server went away)."""
    refused: list[tuple[int, str]] = field(default_factory=list)
    """Any answer that was not 2xx."""
    retry: dict[str, bytes] = field(default_factory=dict)
    """event_id -> body of each refused event (what Svix would send again)."""
    refusals_allowed: bool = False
    """Whether :meth:`wait_for` carries on past answers that were not 2xx."""
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        bodies = [[body_for(self.rng) for _ in range(2000)] for _ in range(self.clients)]
        self._threads = [threading.Thread(target=self._post, args=(own,)) for own in bodies]
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
            assert not thread.is_alive()

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_for(self, acked: int, within: float = 30.0) -> None:
        """Wait until ``acked`` events were acknowledged; fail at once on an answer not 2xx."""

        def reached() -> bool:
            with self._lock:
                if not self.refusals_allowed:
                    assert not self.refused, f"answers not 2xx under load: {self.refused[:3]}"
                return len(self.acked) >= acked

        wait_until(reached, f"{acked} acknowledged events", within)

    def _post(self, bodies: list[bytes]) -> None:
        with httpx.Client(timeout=30) as client:
            for body in bodies:
                if self.stop.is_set():
                    return
                event_id = new_event_id()
                try:
                    response = self.server.post(event_id, body, client=client)
                except httpx.HTTPError:
                    with self._lock:
                        self.unanswered[event_id] = body
                    return
                with self._lock:
                    if response.is_success:
                        self.acked[event_id] = (body, response.json()["position"])
                    else:
                        self.refused.append((response.status_code, response.text))
                        self.retry[event_id] = body


@contextmanager
def load(
    server: Server, rng: random.Random, clients: int = CLIENTS, *, refusals_allowed: bool = False
) -> Iterator[Load]:
    running = Load(server, rng, clients, refusals_allowed=refusals_allowed).start()
    try:
        yield running
    finally:
        running.join()


def logged_events(db_path: Path) -> dict[str, list[tuple[int, bytes]]]:
    """event_id -> every ``(position, body)`` the log holds for it."""
    with closing(sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT event_id, position, body FROM events ORDER BY position")
        found: dict[str, list[tuple[int, bytes]]] = {}
        for event_id, position, body in rows:
            found.setdefault(event_id, []).append((position, body))
        return found


def assert_all_acked_stored(db_path: Path, acked: dict[str, tuple[bytes, int]]) -> None:
    """Every acknowledged event is in the log once, at the position it was answered with,
    with its body byte-exact."""
    logged = logged_events(db_path)
    missing = [event_id for event_id in acked if event_id not in logged]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged events are not in the log"
    for event_id, (body, position) in acked.items():
        assert logged[event_id] == [(position, body)], event_id


# --- SIGKILL of the server --------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_of_the_server_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    rng = seeded("server SIGKILL")
    db_path = tmp_path / "audit.db"
    acked: dict[str, tuple[bytes, int]] = {}
    unanswered: dict[str, bytes] = {}
    for round_ in range(3):
        with running_server(db_path, SECRET) as server:
            projector, writer = projector_pid(server), writer_pid(server)
            with load(server, rng) as running:
                running.wait_for(1)
                time.sleep(rng.uniform(0.05, 0.8))  # the random moment, not a synchronisation
                os.kill(server.process.pid, signal.SIGKILL)
                assert server.process.wait(timeout=10) == -signal.SIGKILL
            assert not running.refused, running.refused[:3]
            assert_gone(projector, f"round {round_}: the projector outlived its killed server")
            assert_gone(writer, f"round {round_}: the writer outlived its killed server")
            acked.update(running.acked)
            unanswered.update(running.unanswered)
            print(f"round {round_}: {len(running.acked)} acknowledged, "
                  f"{len(running.unanswered)} unanswered at the kill")  # fmt: skip
        assert_all_acked_stored(db_path, acked)

    with running_server(db_path, SECRET) as server, httpx.Client(timeout=30) as client:
        for event_id, body in unanswered.items():  # Svix retries what got no answer
            retried = server.post(event_id, body, client=client)
            assert retried.status_code == 200, retried.text
            assert retried.json()["status"] in {"stored", "duplicate"}
            acked[event_id] = (body, retried.json()["position"])
        assert_all_acked_stored(db_path, acked)
        assert len(logged_events(db_path)) == len(acked), "an event nobody sent is in the log"
        position = wait_caught_up(server, client)
        assert health(server, client)["projection_errors"] == 0
        assert_converged(db_path, position)
        assert wait_caught_up(server, client) == position  # it follows the rebuilt generation


# --- SIGKILL of the projector -----------------------------------------------------------------


BACKLOG = 150
"""Events the projector is kept from projecting before it is let go, then killed."""


def _backlog(server: Server, client: httpx.Client, running: Load, projector: int) -> int:
    """Once the projector has committed a step (so it is in its loop, not starting up), pause
    it until the load has added :data:`BACKLOG` events, then let it go; returns the log
    position it then has to reach."""
    before = int(health(server, client)["projected"])
    wait_until(lambda: health(server, client)["projected"] > before, "a step of the projector")
    os.kill(projector, signal.SIGSTOP)
    running.wait_for(running.count() + BACKLOG)
    position = int(health(server, client)["position"])
    os.kill(projector, signal.SIGCONT)
    return position


@pytest.mark.slow
def test_sigkill_of_the_projector_under_load_neither_stops_ingest_nor_diverges(
    tmp_path: Path,
) -> None:
    """Each kill lands at a random moment of the projector's work through a backlog: the
    first backlog (not killed) measures how long that work takes."""
    rng = seeded("projector SIGKILL")
    db_path = tmp_path / "audit.db"
    with running_server(db_path, SECRET) as server, httpx.Client(timeout=30) as client:
        with load(server, rng) as running:
            projector = projector_pid(server)
            goal = _backlog(server, client, running, projector)
            started = time.monotonic()
            wait_until(lambda: health(server, client)["projected"] >= goal, "a backlog", every=0.01)
            work = time.monotonic() - started
            print(f"a backlog of {BACKLOG} events took the projector {work:.3f} s")
            for _ in range(3):
                _backlog(server, client, running, projector)
                time.sleep(rng.uniform(0.0, work))  # the random moment, not a synchronisation
                os.kill(projector, signal.SIGKILL)
                projector = projector_pid(server, other_than=projector)
                print(f"killed at {time.monotonic() - started:.1f} s")
        assert not running.refused, running.refused[:3]
        assert not running.unanswered
        assert_all_acked_stored(db_path, running.acked)
        position = wait_caught_up(server, client)
        assert position == len(running.acked)
        assert health(server, client)["projection_errors"] == 0
        assert_converged(db_path, position)


# --- SIGKILL of the writer process ---------------------------------------------------------


@pytest.mark.slow
def test_sigkill_of_the_writer_process_costs_only_503s_and_ingest_resumes(tmp_path: Path) -> None:
    """Requests the killed writer held are answered 503 with Retry-After (never a 2xx for an
    event not in the log); a new writer takes over without a restart of the server; Svix's
    retries of the refused events are stored or found duplicate."""
    rng = seeded("writer SIGKILL")
    db_path = tmp_path / "audit.db"
    with running_server(db_path, SECRET) as server, httpx.Client(timeout=30) as client:
        writer = writer_pid(server)
        with load(server, rng, refusals_allowed=True) as running:
            for _ in range(3):
                running.wait_for(running.count() + 50)
                time.sleep(rng.uniform(0.0, 0.2))  # the random moment, not a synchronisation
                os.kill(writer, signal.SIGKILL)
                writer = writer_pid(server, other_than=writer)
            running.wait_for(running.count() + 50)
        assert {status for status, _ in running.refused} <= {503}, running.refused[:3]
        assert_all_acked_stored(db_path, running.acked)
        for event_id, body in running.retry.items():
            retried = server.post(event_id, body, client=client)
            assert retried.status_code == 200, retried.text
            running.acked[event_id] = (body, retried.json()["position"])
        assert_all_acked_stored(db_path, running.acked)
        print(f"{len(running.refused)} answers 503 over 3 kills")


# --- a long reader ----------------------------------------------------------------------------


@contextmanager
def reading(path: Path, table: str) -> Iterator[Callable[[], int]]:
    """A connection holding one read transaction on ``path`` (a Datasette query that takes its
    time); yields a function counting ``table``'s rows in that same snapshot."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")

        def count() -> int:
            (rows,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            return int(rows)

        yield count
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_long_reader_on_both_files_stops_neither_ingest_nor_the_projector(
    tmp_path: Path,
) -> None:
    rng = seeded("long reader")
    db_path = tmp_path / "audit.db"
    with running_server(db_path, SECRET) as server, httpx.Client(timeout=30) as client:
        for _ in range(20):
            assert server.post(new_event_id(), body_for(rng), client=client).status_code == 200
        before = wait_caught_up(server, client)
        projections = projections_path(db_path, env={})
        with reading(db_path, "events") as in_log, reading(projections, "audit_timeline") as seen:
            assert in_log() == seen() == before
            with load(server, rng) as running:
                running.wait_for(300)
            assert not running.refused, running.refused[:3]
            assert not running.unanswered
            position = wait_caught_up(server, client)
            assert position == before + len(running.acked)
            assert in_log() == seen() == before, "the readers' snapshots moved"
        assert_all_acked_stored(db_path, running.acked)
        assert_converged(db_path, position)
