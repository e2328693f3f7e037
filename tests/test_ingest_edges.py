"""Bad input at ``POST /webhooks/clerk`` against a real server (CONTRACT §3; issue 12, "Bad input
and faults"): every body size around the limit, with a declared length and chunked, at a small
limit and at the default 1 MiB; the shapes a verified body can take; integers past 64 bits,
exact in the projections and after a rebuild; and Hypothesis over the route's headers and
bodies. Each request is answered per §3 and leaves one ``deliveries`` row, and the server stays
healthy: the next normal event is stored, ``/healthz`` answers 200 and nothing is logged as an
error.

Not repeated here: each failed check and the 413 at the limit (test_ingest_rejections), and the
quarantined bodies of test_ingest_http (not JSON, empty, array, string, no or numeric ``type``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.samples import sample_body, sample_names
from tests.support.ingest import new_agent, only_delivery, sha256, signed, user_created
from tests.support.server import CLI, Server, running_server
from tests.support.signing import new_event_id, new_secret, signed_headers
from tests.support.store import events_by_id, query_projections

LIMIT = 32 * 1024
"""The small server's ``CLERK_AUDIT_MAX_BODY_BYTES``."""
DEFAULT_LIMIT = 1024 * 1024
BIG = 2**70 + 1
"""An integer past 64 bits that no float holds exactly."""
LONG_DIGITS = "12345678901234567890"
"""20 digits: a run long enough to send a body down the parser's path for huge integers."""
EVENT_TYPES = sample_names()


# -- servers and the client --------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a small body limit, shared by the sizes, shapes and Hypothesis tests."""
    path = tmp_path_factory.mktemp("edges") / "audit.db"
    with running_server(path, new_secret(), env={"CLERK_AUDIT_MAX_BODY_BYTES": str(LIMIT)}) as s:
        yield s


@pytest.fixture(scope="module")
def default_limit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the limit left at its default (1 MiB)."""
    path = tmp_path_factory.mktemp("edges-1mib") / "audit.db"
    with running_server(path, new_secret()) as running:
        yield running


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as shared:
        yield shared


# -- sending -----------------------------------------------------------------------------------


def raw_signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """svix's ``v1`` signature computed over the raw bytes. svix's own signer takes text, so it
    cannot sign a body that is not UTF-8; a sender that signs bytes can."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_raw(secret: str, event_id: str, body: bytes, *, agent: str) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "svix-id": event_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": raw_signature(secret, event_id, timestamp, body),
        "user-agent": agent,
    }


def chunks(body: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@dataclass(frozen=True)
class Sent:
    """One request and its answer; ``agent`` finds its ``deliveries`` row."""

    response: httpx.Response
    event_id: str
    agent: str
    body: bytes


def send(
    server: Server,
    client: httpx.Client,
    body: bytes,
    *,
    streamed: bool = False,
    event_id: str | None = None,
    raw: bool = False,
) -> Sent:
    """POST ``body`` signed with the server's secret (by svix, or over the raw bytes), with a
    declared length or chunked."""
    assert server.secret is not None
    event_id, agent = event_id or new_event_id(), new_agent()
    sign = signed_raw if raw else signed
    headers = sign(server.secret, event_id, body, agent=agent)
    content = chunks(body) if streamed else body
    request = client.build_request("POST", server.ingest_url, content=content, headers=headers)
    assert request.headers.get("transfer-encoding") == ("chunked" if streamed else None)
    assert ("content-length" in request.headers) is not streamed
    return Sent(client.send(request), event_id, agent, body)


# -- what the server answered and kept ---------------------------------------------------------


def assert_appended(server: Server, sent: Sent, outcome: str = "stored") -> dict[str, Any]:
    """``sent`` was answered 200 ``outcome``: its event is in the log byte-exact, and its one
    ``deliveries`` row says so. Returns the event's row."""
    assert sent.response.status_code == 200, sent.response.text
    answer = sent.response.json()
    assert answer == {"status": outcome, "event_id": sent.event_id, "position": answer["position"]}
    (event,) = events_by_id(server.db_path, sent.event_id)
    assert (event["position"], event["body"]) == (answer["position"], sent.body)
    assert event["status"] == ("quarantined" if outcome == "quarantined" else "ok")
    delivery = only_delivery(server.db_path, sent.agent)
    assert (delivery["outcome"], delivery["event_id"], delivery["body_sha256"]) == (
        outcome,
        sent.event_id,
        sha256(sent.body),
    )
    assert delivery["reason"] == event["quarantine_reason"]
    return event


def assert_refused(server: Server, sent: Sent, status: int, outcome: str, message: str) -> None:
    """``sent`` was refused with ``status`` naming ``message``, stored nothing and left one
    ``deliveries`` row with that reason."""
    assert sent.response.status_code == status, sent.response.text
    assert list(sent.response.json()) == ["error"]
    error = sent.response.json()["error"]
    assert message in error
    delivery = only_delivery(server.db_path, sent.agent)
    assert (delivery["outcome"], delivery["reason"]) == (outcome, error)
    assert events_by_id(server.db_path, sent.event_id) == []


def assert_healthy(server: Server, client: httpx.Client, since: int) -> None:
    """The next normal event is stored, ``/healthz`` answers 200, and the server logged no
    traceback or error from its log line ``since`` on."""
    sent = send(server, client, user_created())
    position = assert_appended(server, sent)["position"]
    health = client.get(f"{server.url}/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok" and health.json()["position"] >= position
    marker = new_event_id()  # a refusal is logged before it is answered: the log is complete
    client.post(server.ingest_url, content=b"", headers={"svix-id": marker})
    server.wait_for_log(f"delivery rejected event_id={marker}")
    errors = [line for line in server.lines[since:] if "Traceback" in line or " ERROR " in line]
    assert errors == [], "".join(server.lines[since:])


def projections(server: Server, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return query_projections(server.db_path, sql, params)


def projection_errors(server: Server, event_ids: list[str]) -> list[dict[str, Any]]:
    marks = ", ".join("?" * len(event_ids))
    sql = f"SELECT * FROM projection_errors WHERE event_id IN ({marks})"
    return projections(server, sql, tuple(event_ids))


def rebuild(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(CLI), "rebuild", *args, "--db", str(server.db_path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def exact(value: object) -> str:
    """JSON text that tells an integer from the float it would round to."""
    return json.dumps(value, sort_keys=True)


# -- bodies ------------------------------------------------------------------------------------


def user_of_size(size: int) -> bytes:
    """A realistic ``user.created`` of exactly ``size`` bytes, for a user of its own: its
    ``public_metadata`` holds a long sign-in history, padded to size by a note."""
    document = json.loads(user_created())
    entry: dict[str, Any] = {
        "at": 1786000000000,
        "action": "sign_in",
        "ip": "203.0.113.24",
        "ok": True,
    }
    history = [{**entry, "at": entry["at"] + n} for n in range(max(0, size - 3000) // 90)]
    document["data"]["public_metadata"] = {"plan": "pro", "history": history, "note": ""}
    shortfall = size - len(json.dumps(document).encode())
    assert shortfall >= 0, f"{size} bytes is too small for a user.created"
    document["data"]["public_metadata"]["note"] = "x" * shortfall
    body = json.dumps(document).encode()
    assert len(body) == size
    return body


def nested(user_id: str, depth: int, extra: str = "") -> bytes:
    """A ``user.created`` nested ``depth`` levels deep in all (its ``public_metadata`` is a
    tower of lists), with ``extra`` JSON members in ``data``."""
    tower = "[" * (depth - 2) + "1" + "]" * (depth - 2)
    return (f'{{"type": "user.created", "data": {{"id": "{user_id}"{extra}, '
            f'"public_metadata": {tower}}}}}').encode()  # fmt: skip


def new_user_id() -> str:
    return "user_" + secrets.token_hex(10)


# -- body sizes --------------------------------------------------------------------------------

SIZES: dict[str, tuple[Callable[[], bytes], str]] = {
    # case: (the body, what it is answered)
    "0": (lambda: b"", "quarantined"),
    "1": (lambda: b"1", "quarantined"),
    "limit-1": (lambda: user_of_size(LIMIT - 1), "stored"),
    "limit": (lambda: user_of_size(LIMIT), "stored"),
    "limit-not-an-event": (lambda: b"[" + b" " * (LIMIT - 2) + b"]", "quarantined"),
    "limit+1": (lambda: user_of_size(LIMIT + 1), "too_large"),
}


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("case", list(SIZES))
def test_each_body_size_around_the_limit_is_answered_and_ingest_carries_on(
    small: Server, client: httpx.Client, case: str, streamed: bool
) -> None:
    since = len(small.lines)
    make, outcome = SIZES[case]
    sent = send(small, client, make(), streamed=streamed)
    if outcome == "too_large":
        assert_refused(small, sent, 413, "too_large", str(LIMIT))
    else:
        event = assert_appended(small, sent, outcome)
        if outcome == "stored":
            assert event["object_id"] == json.loads(sent.body)["data"]["id"]
    assert_healthy(small, client, since)


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_a_user_just_under_1_mib_is_stored_and_projected_and_ingest_carries_on(
    default_limit: Server, client: httpx.Client, streamed: bool
) -> None:
    """Issue 12: such an event used to stop the writer, and all ingest with it."""
    server, since = default_limit, len(default_limit.lines)
    sent = send(server, client, user_of_size(DEFAULT_LIMIT - 1), streamed=streamed)
    assert_appended(server, sent)
    again = send(server, client, sent.body, streamed=streamed, event_id=sent.event_id)
    assert_appended(server, again, "duplicate")  # Svix's retry of it
    assert_healthy(server, client, since)
    server.wait_projected()
    assert projection_errors(server, [sent.event_id]) == []
    data = json.loads(sent.body)["data"]
    (user,) = projections(server, "SELECT event_id, data FROM users WHERE id = ?", (data["id"],))
    assert user["event_id"] == sent.event_id
    assert json.loads(user["data"]) == data
    timeline = projections(
        server, "SELECT event_type FROM audit_timeline WHERE event_id = ?", (sent.event_id,)
    )
    assert timeline == [{"event_type": "user.created"}]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [DEFAULT_LIMIT, DEFAULT_LIMIT + 1], ids=["1MiB", "1MiB+1"])
def test_the_default_limit_is_1_mib(
    default_limit: Server, client: httpx.Client, size: int, streamed: bool
) -> None:
    since = len(default_limit.lines)
    sent = send(default_limit, client, user_of_size(size), streamed=streamed)
    if size > DEFAULT_LIMIT:
        assert_refused(default_limit, sent, 413, "too_large", str(DEFAULT_LIMIT))
    else:
        assert_appended(default_limit, sent)
    assert_healthy(default_limit, client, since)


# -- body shapes -------------------------------------------------------------------------------

ABSENT = object()
DATA_SHAPES: dict[str, Callable[[str], object]] = {
    "object": lambda user_id: {"id": user_id, "first_name": "Ada", "public_metadata": {}},
    "empty-object": lambda _: {},
    "object-with-numeric-id": lambda _: {"id": BIG, "first_name": "Ada"},
    "string": lambda user_id: user_id,
    "list": lambda user_id: [{"id": user_id}],
    "number": lambda _: 7,
    "null": lambda _: None,
    "absent": lambda _: ABSENT,
}


@pytest.mark.parametrize("shape", list(DATA_SHAPES))
def test_every_shape_of_data_is_stored_and_only_an_object_with_an_id_is_an_entity(
    small: Server, client: httpx.Client, shape: str
) -> None:
    since, user_id = len(small.lines), new_user_id()
    document: dict[str, object] = {"type": "user.created", "timestamp": 1786000000000}
    data = DATA_SHAPES[shape](user_id)
    if data is not ABSENT:
        document["data"] = data
    sent = send(small, client, json.dumps(document).encode())
    event = assert_appended(small, sent)
    entity = shape == "object"
    assert (event["event_type"], event["object_type"]) == ("user.created", "user")
    assert event["object_id"] == (user_id if entity else None)
    assert event["occurred_at"] == "2026-08-06T07:06:40.000Z"
    small.wait_projected()
    by_event = (sent.event_id,)
    timeline = projections(
        small, "SELECT object_id FROM audit_timeline WHERE event_id = ?", by_event
    )
    assert timeline == [{"object_id": user_id if entity else None}]
    users = projections(small, "SELECT id, data FROM users WHERE event_id = ?", by_event)
    assert users == ([{"id": user_id, "data": json.dumps(data, separators=(",", ":"))}]
                     if entity else [])  # fmt: skip
    assert projection_errors(small, [sent.event_id]) == []
    assert_healthy(small, client, since)


def test_integers_past_64_bits_stay_exact_in_the_projections_and_after_a_rebuild(
    small: Server, client: httpx.Client
) -> None:
    """Issue 12: they used to be rounded to floats, and a rebuild repeated the rounding."""
    since = len(small.lines)
    metadata = {
        "big": BIG, "negative": -BIG, "minus_two_to_the_64": -(2**64), "just_past": 2**63,
        "last_int64": 2**63 - 1, "in_a_list": [BIG, 10**40], "nested": {"n": 10**30},
    }  # fmt: skip
    user = json.loads(user_created())
    user["data"]["public_metadata"] = metadata
    attempts: dict[str, Any] = {}
    for amount in (BIG, 2**63, 2**63 - 1, -(2**64)):
        attempt = json.loads(sample_body("paymentAttempt.created"))
        attempt["data"]["id"] = "pa_" + secrets.token_hex(10)
        attempt["data"]["totals"]["grand_total"]["amount"] = amount
        attempts[attempt["data"]["id"]] = attempt
    subscription = json.loads(sample_body("subscription.created"))
    subscription["data"]["id"] = "csub_" + secrets.token_hex(10)
    subscription["data"]["totals"] = {"grand_total": {"amount": BIG, "currency": "USD"}}
    entities = [("users", user), ("subscriptions", subscription)]
    entities += [("payment_attempts", attempt) for attempt in attempts.values()]
    for _, document in entities:
        assert_appended(small, send(small, client, json.dumps(document).encode()))

    def check_exact() -> None:
        assert small.wait_projected()["projected"] > 0
        for table, document in entities:
            entity_id = document["data"]["id"]
            (row,) = projections(small, f"SELECT data FROM {table} WHERE id = ?", (entity_id,))
            assert exact(json.loads(row["data"])) == exact(document["data"]), table
        for attempt_id, attempt in attempts.items():
            amount = attempt["data"]["totals"]["grand_total"]["amount"]
            (row,) = projections(
                small, "SELECT grand_total FROM payment_attempts WHERE id = ?", (attempt_id,)
            )
            assert str(row["grand_total"]) == str(amount)
            if amount in range(-(2**63), 2**63):
                assert row["grand_total"] == amount  # still an INTEGER when it fits

    check_exact()
    checked = rebuild(small, "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rebuilt = rebuild(small)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    check_exact()
    assert_healthy(small, client, since)


@pytest.mark.parametrize(("depth", "outcome"), [(500, "stored"), (2000, "quarantined")])
def test_deep_nesting_is_stored_up_to_the_parsers_limit_and_quarantined_past_it(
    small: Server, client: httpx.Client, depth: int, outcome: str
) -> None:
    since, user_id = len(small.lines), new_user_id()
    sent = send(small, client, nested(user_id, depth))
    event = assert_appended(small, sent, outcome)
    small.wait_projected()
    by_event = (sent.event_id,)
    users = projections(small, "SELECT data FROM users WHERE event_id = ?", by_event)
    if outcome == "stored":
        assert [json.loads(row["data"]) for row in users] == [json.loads(sent.body)["data"]]
    else:
        assert "not valid JSON" in event["quarantine_reason"]
        assert users == []
        timeline = projections(small, "SELECT * FROM audit_timeline WHERE event_id = ?", by_event)
        assert timeline == []
    assert projection_errors(small, [sent.event_id]) == []
    assert_healthy(small, client, since)


@pytest.mark.parametrize(
    ("depth", "digits"),
    [
        pytest.param(1000, False),
        pytest.param(1000, True),
        pytest.param(1024, False),
        pytest.param(1024, True),
    ],
    ids=["1000", "1000-long-digits", "1024", "1024-long-digits"],
)
def test_an_event_within_1024_levels_is_stored_and_projected_whatever_digits_it_holds(
    default_limit: Server, client: httpx.Client, depth: int, digits: bool
) -> None:
    """orjson reads up to 1,024 levels, so such an event is stored, and then projected. (On the
    1 MiB server: the projection errors these leave must not reach the small server's.)"""
    server, since, user_id = default_limit, len(default_limit.lines), new_user_id()
    extra = f', "phone_number": "{LONG_DIGITS}"' if digits else ', "phone_number": "+1555"'
    sent = send(server, client, nested(user_id, depth, extra))
    assert_appended(server, sent)
    assert_healthy(server, client, since)
    server.wait_projected()
    assert projection_errors(server, [sent.event_id]) == []
    (user,) = projections(server, "SELECT event_id, data FROM users WHERE id = ?", (user_id,))
    assert user["event_id"] == sent.event_id
    assert user["data"].count("[") == depth - 2


def test_deep_events_with_long_digit_runs_project_as_they_were_stored(
    server: Server,
) -> None:
    """Whatever the writer decides for a deep event, the projector and a rebuild decide the same
    (its own server: the projections it leaves differ from a rebuild)."""
    sent: list[Sent] = []
    with httpx.Client(timeout=60) as own:
        for depth in range(900, 1025):
            extra = f', "phone_number": "{LONG_DIGITS}"'
            sent.append(send(server, own, nested(new_user_id(), depth, extra)))
        assert {s.response.status_code for s in sent} == {200}
        stored = [s.event_id for s in sent if s.response.json()["status"] == "stored"]
        assert stored, "no deep event was stored at all"
        server.wait_projected()
    assert projection_errors(server, stored) == []
    checked = rebuild(server, "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


NOT_EVENTS: dict[str, tuple[bytes, str]] = {
    # case: (a signed body that is not a JSON object with a string "type", its reason)
    "nan": (b'{"type": "user.created", "data": {"id": "user_nan", "score": NaN}}', "not valid"),
    "infinity": (b'{"type": "user.created", "data": {"score": -Infinity}}', "not valid JSON"),
    "1e999": (b'{"type": "user.created", "data": {"score": 1e999}}', "not valid JSON"),
    "lone-surrogate": (b'{"type": "user.created", "data": {"id": "\\ud800"}}', "not valid JSON"),
    "raw-control-character": (b'{"type": "user.created", "data": {"id": "a\x01"}}', "not valid"),
    "two-documents": (b'{"type": "user.created"} {"type": "user.created"}', "not valid JSON"),
    "trailing-comma": (b'{"type": "user.created",}', "not valid JSON"),
    "number": (b"12345678901234567890123", "not an object"),
    "null": (b"null", "not an object"),
    "true": (b"true", "not an object"),
    "empty-object": (b"{}", '"type"'),
    "type-null": (b'{"type": null, "data": {}}', '"type"'),
    "type-true": (b'{"type": true, "data": {}}', '"type"'),
    "type-list": (b'{"type": ["user.created"], "data": {}}', '"type"'),
    "type-object": (b'{"type": {"name": "user.created"}, "data": {}}', '"type"'),
    "type-huge-integer": (b'{"type": 123456789012345678901234567890}', '"type"'),
    "type-last-of-two-is-not-a-string": (b'{"type": "user.created", "type": 1}', '"type"'),
}


@pytest.mark.parametrize("case", list(NOT_EVENTS))
def test_a_signed_body_that_is_not_an_event_is_quarantined_and_ingest_carries_on(
    small: Server, client: httpx.Client, case: str
) -> None:
    since = len(small.lines)
    body, reason = NOT_EVENTS[case]
    sent = send(small, client, body)
    event = assert_appended(small, sent, "quarantined")
    assert (event["event_type"], event["object_id"]) == (None, None)
    assert reason in event["quarantine_reason"]
    small.wait_projected()
    by_event = (sent.event_id,)
    assert projections(small, "SELECT * FROM audit_timeline WHERE event_id = ?", by_event) == []
    assert projection_errors(small, [sent.event_id]) == []
    assert_healthy(small, client, since)


@pytest.mark.parametrize("long_number", [False, True], ids=["orjson", "huge-integer-path"])
def test_duplicate_keys_the_last_one_wins_in_the_log_and_the_projections(
    small: Server, client: httpx.Client, long_number: bool
) -> None:
    since, first, last = len(small.lines), new_user_id(), new_user_id()
    extra = f', "score": {BIG}' if long_number else ""
    data = f'"id": "{first}", "first_name": "First", "id": "{last}", "first_name": "Last"'
    body = f'{{"type": 5, "type": "user.created", "data": {{{data}{extra}}}}}'.encode()
    sent = send(small, client, body)
    event = assert_appended(small, sent)
    assert (event["event_type"], event["object_id"]) == ("user.created", last)
    small.wait_projected()
    rows = projections(small, "SELECT id, first_name FROM users WHERE id IN (?, ?)", (first, last))
    assert rows == [{"id": last, "first_name": "Last"}]
    timeline = projections(
        small, "SELECT object_id FROM audit_timeline WHERE event_id = ?", (sent.event_id,)
    )
    assert timeline == [{"object_id": last}]
    assert_healthy(small, client, since)


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": "user.created", "data": {"id": "user_\xff"}}',
        b'{"type": "user.created", "data": {"id": "user_\xed\xa0\x80"}}',  # an encoded surrogate
        b'{"type": "user.created", "data": {"id": "user_\xc0\xaf"}}',  # overlong
        b'{"type": "user.created", "data": {"id": "user_\xe2\x82"}}',  # truncated
        b"\xff\xfe{\x00}\x00",  # UTF-16 with its byte-order mark
    ],
    ids=["ff", "surrogate", "overlong", "truncated", "utf-16"],
)
def test_a_body_that_is_not_utf8_is_refused_even_when_signed_over_its_bytes(
    small: Server, client: httpx.Client, body: bytes
) -> None:
    """svix verifies text, so such a body cannot be verified: 400, nothing stored."""
    assert small.secret is not None
    utf8, event_id = b'{"type": "user.created"}', new_event_id()
    svix = signed_headers(small.secret, event_id, utf8)
    ours = raw_signature(small.secret, event_id, int(svix["svix-timestamp"]), utf8)
    assert ours == svix["svix-signature"]  # the bytes below are signed as svix would sign them
    since = len(small.lines)
    sent = send(small, client, body, raw=True)
    assert_refused(small, sent, 400, "rejected", "not UTF-8")
    assert only_delivery(small.db_path, sent.agent)["event_id"] == sent.event_id
    assert_healthy(small, client, since)


# -- Hypothesis over the route's headers and bodies --------------------------------------------

HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HEADER_NAMES = (
    "svix-id", "svix-timestamp", "svix-signature", "webhook-id", "webhook-timestamp",
    "webhook-signature", "Svix-Signature", "SVIX-TIMESTAMP",
)  # fmt: skip


def _field(raw: bytes) -> bytes:
    """``raw`` cut down to what HTTP/1.1 can carry in a header value."""
    kept = bytes(b for b in raw if b == 0x09 or 0x20 <= b <= 0x7E or b >= 0x80)
    return kept.strip(b" \t")


def _now_offset(offset: int) -> bytes:
    return str(int(time.time()) + offset).encode()


def _signature_list(parts: list[bytes]) -> bytes:
    return b" ".join(b"v1," + base64.b64encode(part) for part in parts)


header_values = st.one_of(
    st.binary(max_size=80).map(_field),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(str.encode),
    st.integers(min_value=-(10**14), max_value=10**14).map(lambda n: str(n).encode()),
    st.integers(min_value=-400, max_value=400).map(_now_offset),
    st.lists(st.binary(max_size=40), min_size=1, max_size=3).map(_signature_list),
)
Edit = tuple[str, str, bytes]
"""``(how, header name, value)``: how is ``drop``, ``set`` or ``add``."""
edit_lists = st.lists(
    st.tuples(
        st.sampled_from(["drop", "set", "add"]), st.sampled_from(HEADER_NAMES), header_values
    ),
    max_size=4,
)
near_the_limit = st.builds(lambda n, b: b[:1] * n, st.integers(LIMIT - 1, LIMIT + 2),
                           st.binary(min_size=1, max_size=1))  # fmt: skip
any_bodies = st.one_of(st.binary(max_size=1024), near_the_limit)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
times = st.one_of(
    st.integers(min_value=0, max_value=253_402_300_799_999), json_scalars, st.just(BIG)
)
entity_data = st.builds(
    lambda extra, fields: {**extra, **fields},
    st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    st.fixed_dictionaries(
        {"id": st.text(min_size=1, max_size=12)},
        optional={
            "updated_at": times,
            "created_at": times,
            "deleted": st.booleans(),
            "first_name": json_values,
            "public_metadata": json_values,
            "totals": json_values,
            "organization": json_values,
            "user_id": json_values,
        },
    ),
)
events = st.builds(
    lambda event_type, data, timestamp: {"type": event_type, "data": data, "timestamp": timestamp},
    st.one_of(st.sampled_from(EVENT_TYPES), st.text(max_size=30)),
    st.one_of(entity_data, json_values),
    times,
)
event_bodies = st.builds(
    lambda document, ascii_only, indent: json.dumps(
        document, ensure_ascii=ascii_only, indent=indent
    ).encode(),
    events,
    st.booleans(),
    st.sampled_from([None, 2]),
)


def _is_event_to_python(body: bytes) -> bool:
    """Whether the standard library reads ``body`` as a JSON object with a string ``type``
    (more lenient than the store: it takes NaN, and lone surrogates)."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    return isinstance(document, dict) and isinstance(document.get("type"), str)


def _edit(headers: list[tuple[str, bytes]], edits: list[Edit]) -> list[tuple[str, bytes]]:
    """``headers`` with each edit applied: a header dropped, set to a value, or added again."""
    for how, name, value in edits:
        if how != "add":
            headers = [(k, v) for k, v in headers if k.lower() != name.lower()]
        if how != "drop":
            headers = [*headers, (name, value)]
    return headers


def test_any_headers_with_any_body_are_answered_never_a_5xx(
    small: Server, client: httpx.Client
) -> None:
    """Arbitrary svix headers (missing, garbage, repeated, or a valid set spoilt by a few edits)
    on arbitrary bytes: a 413 exactly when the body is too large, else a 400 (or a 200 when
    the edits left the signature valid), and one ``deliveries`` row that agrees."""
    assert small.secret is not None
    secret, since = small.secret, len(small.lines)

    @HYPOTHESIS
    @given(signed=st.booleans(), edits=edit_lists, body=any_bodies, streamed=st.booleans())
    def deliver(signed: bool, edits: list[Edit], body: bytes, streamed: bool) -> None:
        agent = new_agent()
        valid = signed_raw(secret, new_event_id(), body, agent=agent) if signed else {}
        headers = [(k, v.encode()) for k, v in valid.items() if k != "user-agent"]
        sent = [*_edit(headers, edits), ("user-agent", agent.encode())]
        # httpx takes pairs all str or all bytes: the ASCII names as the bytes it would send
        response = client.post(
            small.ingest_url,
            content=chunks(body) if streamed else body,
            headers=[(name.encode(), value) for name, value in sent],
        )
        too_large = len(body) > LIMIT
        assert response.status_code in ((413,) if too_large else (200, 400)), response.text
        delivery = only_delivery(small.db_path, agent)
        if response.status_code == 200:
            assert delivery["outcome"] == response.json()["status"]
            assert delivery["outcome"] in ("stored", "quarantined")
        else:
            assert delivery["outcome"] == ("too_large" if too_large else "rejected")
            assert delivery["reason"] == response.json()["error"]

    deliver()
    assert_healthy(small, client, since)


def test_any_validly_signed_bytes_are_stored_quarantined_or_refused_never_a_5xx(
    small: Server, client: httpx.Client
) -> None:
    since = len(small.lines)
    bodies = st.one_of(
        any_bodies, st.text(max_size=200).map(str.encode), json_values.map(json.dumps).map(
            str.encode), event_bodies)  # fmt: skip

    @HYPOTHESIS
    @given(body=bodies, streamed=st.booleans())
    def deliver(body: bytes, streamed: bool) -> None:
        sent = send(small, client, body, streamed=streamed, raw=True)
        assert sent.response.status_code < 500, sent.response.text
        if len(body) > LIMIT:
            assert_refused(small, sent, 413, "too_large", str(LIMIT))
            return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            assert_refused(small, sent, 400, "rejected", "not UTF-8")
            return
        outcome = sent.response.json().get("status")
        assert outcome in ("stored", "quarantined"), sent.response.text
        assert_appended(small, sent, outcome)
        if outcome == "stored":
            assert _is_event_to_python(body)

    deliver()
    assert_healthy(small, client, since)


def test_any_json_event_is_stored_projected_and_matches_a_rebuild(
    small: Server, client: httpx.Client
) -> None:
    since = len(small.lines)
    stored: list[str] = []

    @HYPOTHESIS
    @given(body=event_bodies, streamed=st.booleans())
    def deliver(body: bytes, streamed: bool) -> None:
        sent = send(small, client, body, streamed=streamed)
        event = assert_appended(small, sent)
        assert event["event_type"] == json.loads(body)["type"]
        stored.append(sent.event_id)

    deliver()
    assert_healthy(small, client, since)
    health = small.wait_projected()
    assert projection_errors(small, stored) == []
    assert health["projection_errors"] == 0
    checked = rebuild(small, "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
