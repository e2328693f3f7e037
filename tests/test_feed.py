"""``GET /events`` and ``clerk-audit tail`` (CONTRACT §9): the log for downstream workers.

Through the real server: the route exists only with a token, refuses a missing or wrong one
(401) and bad parameters (400, saying why), pages by position with the next cursor, filters
by type prefix and object id, and a long poll is woken by the writer's commit (the fallback
poll is made far longer than the test's wait, so only the signal can answer in time).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventstore.location import LogLocation, location_text
from tests.support.server import Server, running_server
from tests.support.signing import new_event_id, new_secret

TOKEN = "feed-token-" + secrets.token_hex(16)
CLI = Path(sys.executable).with_name("clerk-audit")
WAIT_S = 20
"""A long poll's wait in these tests; the fallback poll is longer, so only a signal wakes it."""


@pytest.fixture(params=["sqlite", "postgresql"])
def feed_server(request: pytest.FixtureRequest, db_path: Path, secret: str) -> Iterator[Server]:
    """A server with the feed, on each kind of log (the same objects, byte for byte)."""
    projections = str(db_path.with_name("audit.projections.db"))
    env = {"CLERK_AUDIT_FEED_TOKEN": TOKEN, "CLERK_AUDIT_FEED_POLL_S": "600",
           "CLERK_AUDIT_PROJECTIONS_DB": projections}  # fmt: skip
    log = db_path if request.param == "sqlite" else request.getfixturevalue("pg_log")
    with running_server(log, secret, env=env, extra=("--log-level", "debug")) as server:
        yield server


def body(event_type: str, object_id: str, *, canonical: bool = True, **data: Any) -> bytes:
    """A compact event body; ``canonical=False``: as Python's json writes it (spaces, \\u
    escapes), which no re-serialisation would give back."""
    document = {
        "data": {"id": object_id, "updated_at": 1_786_000_000_000, **data},
        "object": "event",
        "type": event_type,
        "timestamp": 1_786_000_000_000,
    }
    if not canonical:
        return json.dumps(document).encode()
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def get(server: Server, token: str | None = TOKEN, **params: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{server.url}/events", params=params, headers=headers, timeout=60)


def store(server: Server, payload: bytes) -> int:
    response = server.post(new_event_id(), payload)
    assert response.status_code == 200, response.text
    position: int = response.json()["position"]
    return position


def test_the_route_is_absent_without_a_token(server: Server) -> None:
    response = httpx.get(f"{server.url}/events", headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404


@pytest.fixture(scope="module")
def idle_feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One feed server for the tests that store nothing."""
    db_path = tmp_path_factory.mktemp("feed") / "audit.db"
    env = {"CLERK_AUDIT_FEED_TOKEN": TOKEN}
    with running_server(db_path, new_secret(), env=env) as server:
        yield server


UNAUTHORISED = [None, "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN]


def test_a_missing_or_wrong_token_gets_401(idle_feed: Server) -> None:
    for authorization in UNAUTHORISED:
        headers = {"authorization": authorization} if authorization is not None else {}
        response = httpx.get(f"{idle_feed.url}/events", headers=headers)
        assert response.status_code == 401, authorization
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "bearer token" in response.json()["error"]
    assert get(idle_feed).status_code == 200


BAD_PARAMETERS = [
    ({"after": "-1"}, "after must be a position"),
    ({"after": "abc"}, "after must be a position"),
    ({"after": "1.5"}, "after must be a position"),
    ({"limit": "0"}, "limit must be a whole number from 1 to 10000"),
    ({"limit": "10001"}, "limit must be a whole number from 1 to 10000"),
    ({"wait": "31"}, "wait must be a whole number from 0 to 30"),
    ({"type": ""}, "type must be"),
    ({"cursor": "3"}, "unknown parameter 'cursor'"),
]


def test_bad_parameters_get_400_with_the_reason(idle_feed: Server) -> None:
    for params, reason in BAD_PARAMETERS:
        response = get(idle_feed, **params)
        assert response.status_code == 400, params
        assert reason in response.json()["error"], response.text
    assert get(idle_feed, after=0, limit=10_000, wait=0).status_code == 200


def test_pages_follow_the_log_with_the_next_cursor_and_bodies_byte_exact(
    feed_server: Server,
) -> None:
    bodies = [
        body("user.created", f"user_{n}", canonical=n % 2 == 1, first_name="Zoë 👋")
        for n in range(5)
    ]
    positions = [store(feed_server, payload) for payload in bodies]
    assert positions == [1, 2, 3, 4, 5]

    seen: list[dict[str, Any]] = []
    after, pages = 0, 0
    while True:
        response = get(feed_server, after=after, limit=2)
        assert response.status_code == 200
        page = response.json()
        if not page["events"]:
            assert page["next"] == after
            break
        for raw, event in zip(bodies[len(seen) :], page["events"], strict=False):
            assert raw in response.content  # the body's own bytes, not re-serialised
            assert event["body"] == json.loads(raw)
        seen += page["events"]
        after, pages = page["next"], pages + 1
    assert pages == 3
    assert [event["position"] for event in seen] == positions
    first = seen[0]
    assert set(first) == {
        "position", "event_id", "event_type", "object_type", "object_id", "instance_id",
        "occurred_at", "received_at", "svix_timestamp", "body_sha256", "status",
        "quarantine_reason", "chain", "body",
    }  # fmt: skip
    assert first["event_type"] == "user.created"
    assert first["object_id"] == "user_0"
    assert first["status"] == "ok"


def test_filters_by_type_prefix_and_object_id(feed_server: Server) -> None:
    store(feed_server, body("user.created", "user_a"))
    store(feed_server, body("session.created", "sess_a", user_id="user_a"))
    store(feed_server, body("user.updated", "user_a"))
    store(feed_server, body("user.created", "user_b"))
    store(feed_server, body("organization.created", "org_a"))

    users = get(feed_server, type="user.").json()
    assert [e["position"] for e in users["events"]] == [1, 3, 4]
    assert users["next"] == 5  # past what it looked at: the head

    both = get(feed_server, type=["user.created", "organization."]).json()
    assert [e["position"] for e in both["events"]] == [1, 4, 5]

    one = get(feed_server, object_id="user_a", limit=1).json()
    assert [e["position"] for e in one["events"]] == [1]
    assert one["next"] == 1
    rest = get(feed_server, object_id="user_a", after=1).json()
    assert [e["position"] for e in rest["events"]] == [3]

    assert get(feed_server, type="waitlistEntry.").json() == {"events": [], "next": 5}


def test_a_quarantined_body_comes_as_its_exact_text(feed_server: Server) -> None:
    pretty = json.dumps(json.loads(body("user.created", "user_p")), indent=2).encode()
    store(feed_server, b"[1, 2, 3]")
    store(feed_server, pretty)
    response = get(feed_server)
    quarantined, stored = response.json()["events"]
    assert quarantined["status"] == "quarantined"
    assert quarantined["body_text"] == "[1, 2, 3]"
    assert "body" not in quarantined
    assert stored["body"] == json.loads(pretty)  # a body over several lines is still JSON
    assert pretty in response.content
    lines = tail(feed_server.db_path)  # one line each: the body on one line, and its text
    assert lines[1]["body"] == json.loads(pretty)
    assert lines[1]["body_text"] == pretty.decode()


def test_a_long_poll_is_answered_when_the_writer_commits(feed_server: Server) -> None:
    store(feed_server, body("user.created", "user_1"))
    answers: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: answers.append(get(feed_server, after=1, wait=WAIT_S, type="user."))
    )
    waiting.start()
    feed_server.wait_for_log("feed: waiting up to 20 s for events after 1")
    store(feed_server, body("session.created", "sess_1"))  # filtered out: it keeps waiting
    store(feed_server, body("user.updated", "user_1"))
    waiting.join(timeout=WAIT_S - 5)  # answered by the signal, well before its wait is over
    assert not waiting.is_alive(), "the long poll was not woken by the commit"
    (answer,) = answers
    assert [e["position"] for e in answer.json()["events"]] == [3]


def test_a_long_poll_with_nothing_new_answers_empty_at_its_deadline(
    db_path: Path, secret: str
) -> None:
    with running_server(db_path, secret, env={"CLERK_AUDIT_FEED_TOKEN": TOKEN}) as server:
        response = get(server, after=0, wait=1)
    assert response.json() == {"events": [], "next": 0}


def tail(db_path: LogLocation, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run([str(CLI), "tail", "--db", location_text(db_path), *args],
                          capture_output=True, timeout=60, check=True)  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_tail_prints_the_same_objects_one_per_line(feed_server: Server) -> None:
    store(feed_server, body("user.created", "user_a"))
    store(feed_server, body("session.created", "sess_a"))
    store(feed_server, body("user.updated", "user_a"))
    over_http = get(feed_server).json()["events"]
    assert tail(feed_server.db_path) == over_http
    assert [e["position"] for e in tail(feed_server.db_path, "--after", "1")] == [2, 3]
    assert [e["position"] for e in tail(feed_server.db_path, "--type", "user.")] == [1, 3]


def test_tail_follow_prints_events_as_they_are_committed(feed_server: Server) -> None:
    store(feed_server, body("user.created", "user_a"))
    command = [str(CLI), "tail", "--db", str(feed_server.db_path), "--follow", "--type", "user."]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["position"] == 1
        store(feed_server, body("session.created", "sess_a"))
        store(feed_server, body("user.deleted", "user_a"))
        assert json.loads(process.stdout.readline())["event_type"] == "user.deleted"
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
