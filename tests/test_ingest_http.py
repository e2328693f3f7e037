"""The accepted rows of CONTRACT §3 against a real server: stored, duplicate, conflict,
quarantined, unknown type, header spellings, /healthz, concurrency, and what the store keeps."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import httpx
import pytest

from eventstore.engine import sqlite3
from eventstore.location import PostgresLog
from eventstore.samples import sample_body, sample_names
from tests.support.ingest import new_agent, only_delivery, post, sha256, signed, user_created
from tests.support.server import Server, running_server
from tests.support.signing import new_event_id, new_secret
from tests.support.store import (
    deliveries_by_agent,
    events_by_id,
    query,
    query_projections,
    table_columns,
)

ENTITY_TABLES = (
    "users", "organizations", "organization_memberships", "organization_invitations",
    "organization_domains", "sessions", "roles", "permissions", "waitlist_entries",
    "subscriptions", "subscription_items", "payment_attempts", "emails", "sms_messages",
)  # fmt: skip
DELIVERY_COLUMNS = [
    "id", "event_id", "received_at", "svix_timestamp", "outcome", "reason", "remote_addr",
    "user_agent", "body_sha256",
]  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per backend for the module: the same contract for both logs."""
    folder = tmp_path_factory.mktemp("ingest")
    if request.param == "sqlite":
        with running_server(folder / "audit.db", new_secret()) as running:
            yield running
        return
    log = request.getfixturevalue("postgres_server").new_database()
    env = {"CLERK_AUDIT_PROJECTIONS_DB": str(folder / "audit.projections.db")}
    with running_server(log, new_secret(), env=env) as running:
        yield running


def sqlite_only(server: Server) -> None:
    if isinstance(server.db_path, PostgresLog):
        pytest.skip("reads the SQLite file itself (tests/test_postgres_log.py has the same)")


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as shared:
        yield shared


def deliver(
    server: Server, client: httpx.Client, event_id: str, body: bytes
) -> tuple[httpx.Response, str]:
    """POST ``body`` signed with the server's secret; returns the answer and the request's tag."""
    assert server.secret is not None
    agent = new_agent()
    headers = signed(server.secret, event_id, body, agent=agent)
    return post(client, server.ingest_url, body, headers), agent


def timeline_rows(server: Server, event_id: str) -> list[dict[str, object]]:
    """The event's timeline rows, once the projector has caught up with the log."""
    server.wait_projected()
    sql = "SELECT * FROM audit_timeline WHERE event_id = ?"
    return query_projections(server.db_path, sql, (event_id,))


def test_a_new_event_is_stored_byte_exact_and_projected(
    server: Server, client: httpx.Client
) -> None:
    event_id, body = new_event_id(), user_created()
    response, agent = deliver(server, client, event_id, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    position = answer["position"]
    assert answer == {"status": "stored", "event_id": event_id, "position": position}
    (event,) = events_by_id(server.db_path, event_id)
    assert (event["position"], event["body"], event["body_sha256"]) == (
        position,
        body,
        sha256(body),
    )
    assert (event["status"], event["event_type"]) == ("ok", "user.created")
    delivery = only_delivery(server.db_path, agent)
    assert delivery["outcome"] == "stored" and delivery["reason"] is None
    assert (delivery["event_id"], delivery["body_sha256"]) == (event_id, sha256(body))
    assert delivery["svix_timestamp"] == event["svix_timestamp"]
    assert [row["position"] for row in timeline_rows(server, event_id)] == [position]
    user_id = json.loads(body)["data"]["id"]
    users = query_projections(server.db_path, "SELECT event_id FROM users WHERE id = ?", (user_id,))
    assert users == [{"event_id": event_id}]


def test_the_same_event_again_is_a_duplicate_at_the_same_position(
    server: Server, client: httpx.Client
) -> None:
    event_id, body = new_event_id(), user_created()
    first, _ = deliver(server, client, event_id, body)
    again, agent = deliver(server, client, event_id, body)
    assert again.status_code == 200
    position = first.json()["position"]
    assert again.json() == {"status": "duplicate", "event_id": event_id, "position": position}
    assert len(events_by_id(server.db_path, event_id)) == 1
    delivery = only_delivery(server.db_path, agent)
    assert (delivery["outcome"], delivery["event_id"]) == ("duplicate", event_id)
    assert (delivery["reason"], delivery["body_sha256"]) == (None, sha256(body))
    assert len(timeline_rows(server, event_id)) == 1


def test_another_body_under_a_stored_id_is_a_conflict_and_the_event_is_untouched(
    server: Server, client: httpx.Client
) -> None:
    event_id, body, other = new_event_id(), user_created(), user_created()
    first, _ = deliver(server, client, event_id, body)
    (before,) = events_by_id(server.db_path, event_id)
    response, agent = deliver(server, client, event_id, other)
    assert response.status_code == 409
    error = response.json()["error"]
    assert event_id in error and "different body" in error
    assert events_by_id(server.db_path, event_id) == [before]
    assert before["body"] == body and before["position"] == first.json()["position"]
    delivery = only_delivery(server.db_path, agent)
    assert (delivery["outcome"], delivery["reason"]) == ("conflict", error)
    assert (delivery["event_id"], delivery["body_sha256"]) == (event_id, sha256(other))
    assert len(timeline_rows(server, event_id)) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not JSON", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'[{"type": "user.created"}]', "not an object"),
        (b'"user.created"', "not an object"),
        (b'{"object": "event", "data": {"id": "user_1"}}', '"type"'),
        (b'{"type": 42, "data": {}}', '"type"'),
    ],
    ids=["not-json", "empty", "array", "string", "no-type", "numeric-type"],
)
def test_a_signed_body_that_is_not_an_event_is_quarantined_and_not_projected(
    server: Server, client: httpx.Client, body: bytes, reason: str
) -> None:
    event_id = new_event_id()
    response, agent = deliver(server, client, event_id, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == {"status": "quarantined", "event_id": event_id, "position": answer["position"]}
    (event,) = events_by_id(server.db_path, event_id)
    assert (event["status"], event["body"], event["event_type"]) == ("quarantined", body, None)
    assert reason in event["quarantine_reason"]
    delivery = only_delivery(server.db_path, agent)
    assert (delivery["outcome"], delivery["reason"]) == ("quarantined", event["quarantine_reason"])
    assert timeline_rows(server, event_id) == []
    again, _ = deliver(server, client, event_id, body)
    assert again.json() == {**answer, "status": "duplicate"}


def test_an_unknown_event_type_is_stored_and_only_in_the_timeline(
    server: Server, client: httpx.Client
) -> None:
    event_id, widget_id = new_event_id(), "widget_" + new_event_id()
    body = json.dumps({"type": "widget.exploded", "object": "event", "timestamp": 1786000000000,
                       "data": {"id": widget_id, "object": "widget"}}).encode()  # fmt: skip
    response, agent = deliver(server, client, event_id, body)
    assert response.status_code == 200
    assert response.json()["status"] == "stored"
    (event,) = events_by_id(server.db_path, event_id)
    assert (event["status"], event["event_type"], event["object_id"]) == (
        "ok", "widget.exploded", widget_id
    )  # fmt: skip
    assert only_delivery(server.db_path, agent)["outcome"] == "stored"
    (row,) = timeline_rows(server, event_id)
    assert (row["event_type"], row["object_id"]) == ("widget.exploded", widget_id)
    for table in ENTITY_TABLES:
        sql = f"SELECT count(*) AS n FROM [{table}] WHERE event_id = ? OR id = ?"
        assert query_projections(server.db_path, sql, (event_id, widget_id)) == [{"n": 0}], table


@pytest.mark.parametrize(
    "rename",
    [
        lambda name: name.replace("svix-", "webhook-"),
        lambda name: "-".join(part.title() for part in name.split("-")),
        str.upper,
    ],
    ids=["webhook-names", "Title-Case", "UPPER"],
)
def test_other_spellings_of_the_header_names_are_accepted(
    server: Server, client: httpx.Client, rename: Callable[[str], str]
) -> None:
    event_id, body, agent = new_event_id(), user_created(), new_agent()
    assert server.secret is not None
    headers = {rename(k) if k.startswith("svix-") else k: v
               for k, v in signed(server.secret, event_id, body, agent=agent).items()}  # fmt: skip
    response = post(client, server.ingest_url, body, headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stored"
    assert only_delivery(server.db_path, agent)["event_id"] == event_id


def test_healthz_answers_200_with_the_log_position_and_the_projections_progress(
    server: Server, client: httpx.Client
) -> None:
    deliver(server, client, new_event_id(), user_created())
    response = client.get(f"{server.url}/healthz")
    assert response.status_code == 200
    (last,) = query(server.db_path, "SELECT max(position) AS p FROM events")
    answer = response.json()
    assert answer["position"] == last["p"] and 0 <= answer["projected"] <= last["p"]
    caught_up = server.wait_projected()
    (projected,) = query_projections(
        server.db_path, "SELECT CAST(value AS INTEGER) AS p FROM _projection_meta WHERE key = ?",
        ("position",),
    )  # fmt: skip
    assert caught_up == {
        "status": "ok", "position": last["p"], "projected": projected["p"],
        "projection_errors": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET body = x'00' WHERE event_id = :id",
        "DELETE FROM events WHERE event_id = :id",
        "INSERT OR REPLACE INTO events SELECT * FROM events WHERE event_id = :id",
        "UPDATE deliveries SET outcome = 'rejected' WHERE event_id = :id",
        "DELETE FROM deliveries WHERE event_id = :id",
    ],
)
def test_plain_sqlite3_cannot_change_what_the_server_stored(
    server: Server, client: httpx.Client, statement: str
) -> None:
    sqlite_only(server)
    event_id, body = new_event_id(), user_created()
    assert deliver(server, client, event_id, body)[0].status_code == 200
    before = events_by_id(server.db_path, event_id)
    with closing(sqlite3.connect(server.sqlite_path, timeout=10)) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement, {"id": event_id})
        conn.rollback()
    assert events_by_id(server.db_path, event_id) == before
    (delivery,) = query(server.db_path, "SELECT * FROM deliveries WHERE event_id = ?", (event_id,))
    assert delivery["outcome"] == "stored"


def test_deliveries_never_hold_bodies(server: Server, client: httpx.Client) -> None:
    canary = "canary-" + new_event_id()
    assert table_columns(server.db_path, "deliveries") == DELIVERY_COLUMNS
    stored = user_created().replace(b'"Maya"', f'"{canary}"'.encode())
    deliver(server, client, new_event_id(), stored)
    deliver(server, client, new_event_id(), canary.encode())  # quarantined
    headers = {"svix-id": new_event_id(), "svix-timestamp": "1", "svix-signature": "v1,AAAA"}
    post(client, server.ingest_url, canary.encode(), headers)  # rejected
    dump = repr(query(server.db_path, "SELECT * FROM deliveries"))
    assert canary not in dump


def test_fifty_concurrent_deliveries_of_one_event_store_it_once(server: Server) -> None:
    event_id, body, agent = new_event_id(), user_created(), new_agent()
    assert server.secret is not None
    headers = signed(server.secret, event_id, body, agent=agent)
    start = threading.Barrier(50)

    def send(_: int) -> httpx.Response:
        start.wait(timeout=30)
        return post(pool_client, server.ingest_url, body, headers)

    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    with httpx.Client(timeout=30, limits=limits) as pool_client, ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(send, range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    answers = [r.json() for r in responses]
    assert Counter(a["status"] for a in answers) == {"stored": 1, "duplicate": 49}
    assert len({a["position"] for a in answers}) == 1
    assert len(events_by_id(server.db_path, event_id)) == 1
    outcomes = Counter(row["outcome"] for row in deliveries_by_agent(server.db_path, agent))
    assert outcomes == {"stored": 1, "duplicate": 49}


def _personal_data() -> set[str]:
    """Every email address and IP address in the shipped samples."""
    text = b"".join(sample_body(name) for name in sample_names()).decode()
    found = set(re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", text))
    found |= set(re.findall(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", text))
    return found


def test_no_personal_data_reaches_the_log_at_the_default_level(
    server: Server, client: httpx.Client
) -> None:
    personal = _personal_data()
    assert {"maya.okafor@example.com", "203.0.113.24"} <= personal
    for name in sample_names():
        body = sample_body(name)
        if not any(item.encode() in body for item in personal):
            continue
        event_id = new_event_id()
        deliver(server, client, event_id, body)
        deliver(server, client, event_id, body + b" ")  # conflict
        headers = {"svix-id": new_event_id(), "svix-timestamp": "1", "svix-signature": "v1,AAAA"}
        post(client, server.ingest_url, body, headers)  # rejected
    last = new_event_id()
    post(client, server.ingest_url, b"", {"svix-id": last})
    server.wait_for_log(f"delivery rejected event_id={last}")
    assert "delivery conflict" in server.log
    leaked = [item for item in personal if item in server.log]
    assert leaked == []
    own = ("Uvicorn running on", "clerk-audit: log ")  # its own address; the database's
    client_ips = [line for line in server.lines
                  if "127.0.0.1" in line and not any(o in line for o in own)]  # fmt: skip
    assert client_ips == []


def test_the_module_store_is_sound(server: Server) -> None:
    """After everything above, the file the server wrote is a sound SQLite database."""
    sqlite_only(server)
    assert query(server.sqlite_path, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]
