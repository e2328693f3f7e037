"""Faults of the PostgreSQL log (CONTRACT §10): the database stopped and started again under
load. While it is down every request is answered 503 with Retry-After within the busy timeout
(never left hanging); once it is back the same server process commits again by itself, every
event it acknowledged is in the log, and every request has its ``deliveries`` row."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.ingest import user_created
from tests.support.postgres import PostgresServer, postgres_or_skip
from tests.support.server import Server, running_server
from tests.support.signing import new_event_id, new_secret
from tests.support.store import query

CLIENTS = 4
BUSY_TIMEOUT_MS = "1000"
WAIT_S = 120.0
"""The most a condition is waited for: a hang detector, not a timing assumption."""


@dataclass
class Answers:
    """Every answer the load got: (event_id, status, Retry-After)."""

    rows: list[tuple[str, int, str | None]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, event_id: str, response: httpx.Response) -> None:
        with self.changed:
            self.rows.append((event_id, response.status_code, response.headers.get("retry-after")))
            self.changed.notify_all()

    def count(self, status: int) -> int:
        return sum(1 for _, code, _ in self.rows if code == status)

    def wait_for(self, status: int, at_least: int) -> None:
        with self.changed:
            reached = self.changed.wait_for(lambda: self.count(status) >= at_least, WAIT_S)
        assert reached, f"fewer than {at_least} answers {status}: {self.rows[-5:]}"


def _load(server: Server, answers: Answers, stop: threading.Event) -> None:
    with httpx.Client(timeout=WAIT_S) as client:
        while not stop.is_set():
            event_id = new_event_id()
            answers.add(event_id, server.post(event_id, user_created(), client=client))


@pytest.fixture
def database(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, since the test stops it."""
    with postgres_or_skip() as server:
        yield server


@pytest.mark.slow
def test_a_database_restart_under_load_is_503_then_recovered_with_nothing_lost(
    database: PostgresServer, tmp_path: Path
) -> None:
    log = database.new_database()
    env = {"CLERK_AUDIT_PROJECTIONS_DB": str(tmp_path / "p.db"),
           "CLERK_AUDIT_BUSY_TIMEOUT_MS": BUSY_TIMEOUT_MS}  # fmt: skip
    answers, stop = Answers(), threading.Event()
    with running_server(log, new_secret(), env=env) as server:
        pid = server.process.pid
        load = [
            threading.Thread(target=_load, args=(server, answers, stop)) for _ in range(CLIENTS)
        ]
        for thread in load:
            thread.start()
        try:
            answers.wait_for(200, 20)
            database.stop("fast")
            answers.wait_for(503, 2 * CLIENTS)
            down = server.post(new_event_id(), user_created())
            assert down.status_code == 503 and down.headers["retry-after"] == "5"
            assert "cannot commit" in down.json()["error"] and "127.0.0.1" not in down.text
            database.start()
            answers.wait_for(200, answers.count(200) + 20)
        finally:
            stop.set()
            for thread in load:
                thread.join(timeout=WAIT_S)
        health = server.wait_projected()
        assert server.process.pid == pid and server.process.poll() is None
    assert {code for _, code, _ in answers.rows} == {200, 503}
    assert {after for _, code, after in answers.rows if code == 503} == {"5"}
    acknowledged = {event_id for event_id, code, _ in answers.rows if code == 200}
    stored = {row["event_id"] for row in query(log, "SELECT event_id FROM events")}
    assert acknowledged <= stored
    assert health["position"] == len(stored)
    deliveries = query(log, "SELECT event_id, outcome FROM deliveries")
    asked = {event_id for event_id, _, _ in answers.rows} | {down.request.headers["svix-id"]}
    assert asked <= {row["event_id"] for row in deliveries}
    unavailable = sum(1 for row in deliveries if row["outcome"] == "unavailable")
    assert unavailable == answers.count(503) + 1
