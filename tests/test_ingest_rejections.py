"""Refused deliveries against a real server (CONTRACT §3): every failed check is a 400 naming the
check (never a 500), a body over the limit is a 413, and each leaves one ``deliveries`` row."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support.ingest import new_agent, only_delivery, sha256, user_created
from tests.support.server import Server, running_server
from tests.support.signing import new_event_id, new_secret, signed_headers
from tests.support.store import deliveries_by_agent, events_by_id

LIMIT = 8192
MALFORMED = "svix-signature header is malformed"
Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Delivery:
    """One signed delivery, which a case then spoils."""

    secret: str
    event_id: str
    body: bytes

    def headers(self, *, at: int | None = None, secret: str | None = None) -> dict[str, str]:
        return signed_headers(secret or self.secret, self.event_id, self.body, at=at)

    @property
    def signature(self) -> str:
        return self.headers()["svix-signature"]


Case = Callable[[Delivery], tuple[Headers, bytes]]


def _with(delivery: Delivery, **changes: str | None) -> tuple[Headers, bytes]:
    """The delivery's signed headers with some replaced (a value of None drops the header)."""
    headers = {**delivery.headers(), **{k.replace("_", "-"): v for k, v in changes.items()}}
    return [(k, v) for k, v in headers.items() if v is not None], delivery.body


def _signature(value: Callable[[str], str]) -> Case:
    return lambda d: _with(d, svix_signature=value(d.signature))


def _other_body(d: Delivery, body: bytes) -> tuple[Headers, bytes]:
    return list(d.headers().items()), body


def _at(offset: int) -> Case:
    return lambda d: (list(d.headers(at=int(time.time()) + offset).items()), d.body)


def _repeated(name: str) -> Case:
    return lambda d: ([*d.headers().items(), (name, d.headers()[name])], d.body)


def _random_signature() -> str:
    return "v1," + base64.b64encode(secrets.token_bytes(32)).decode()


REJECTED: dict[str, tuple[Case, str, bool]] = {
    # case: (how the delivery is spoiled, what the error must say, whether the svix-id it
    # claims is recorded in its deliveries row)
    "missing-id": (lambda d: _with(d, svix_id=None), "missing header svix-id", False),
    "missing-timestamp": (
        lambda d: _with(d, svix_timestamp=None),
        "missing header svix-timestamp",
        True,
    ),
    "missing-signature": (
        lambda d: _with(d, svix_signature=None),
        "missing header svix-signature",
        True,
    ),
    "empty-signature": (
        lambda d: _with(d, svix_signature=""),
        "missing header svix-signature",
        True,
    ),
    "no-headers": (
        lambda d: _with(d, svix_id=None, svix_timestamp=None, svix_signature=None),
        "missing headers svix-id, svix-timestamp, svix-signature",
        False,
    ),
    "bad-signature": (_signature(lambda _: _random_signature()), "no matching signature", True),
    "wrong-secret": (
        lambda d: (list(d.headers(secret=new_secret()).items()), d.body),
        "no matching signature",
        True,
    ),
    "tampered-body": (
        lambda d: _other_body(d, d.body.replace(b'"Maya"', b'"Mayb"')),
        "no matching signature",
        True,
    ),
    "reserialised-body": (
        lambda d: _other_body(d, json.dumps(json.loads(d.body)).encode()),
        "no matching signature",
        True,
    ),
    "id-changed": (lambda d: _with(d, svix_id=new_event_id()), "no matching signature", True),
    "timestamp-changed": (
        lambda d: _with(d, svix_timestamp=str(int(d.headers()["svix-timestamp"]) + 1)),
        "no matching signature",
        True,
    ),
    "only-v2": (_signature(lambda s: "v2," + s[3:]), "no matching signature", True),
    "non-alphabet-v1": (_signature(lambda _: "v1,!!!"), "no matching signature", True),
    "6-minutes-old": (_at(-360), "svix-timestamp is more than 5 minutes old", True),
    "6-minutes-ahead": (_at(360), "svix-timestamp is more than 5 minutes in the future", True),
    "fractional-timestamp": (
        lambda d: _with(d, svix_timestamp=d.headers()["svix-timestamp"] + ".0"),
        "svix-timestamp is not integer seconds",
        True,
    ),
    "word-timestamp": (
        lambda d: _with(d, svix_timestamp="yesterday"),
        "svix-timestamp is not integer seconds",
        True,
    ),
    "millisecond-timestamp": (
        lambda d: _with(d, svix_timestamp=str(int(time.time() * 1000))),
        "svix-timestamp is not integer seconds",
        True,
    ),
    "year-33658-timestamp": (
        lambda d: _with(d, svix_timestamp="999999999999"),
        "svix-timestamp is not a valid time",
        True,
    ),
    "unprintable-id": (lambda d: _with(d, svix_id="msg one"), "svix-id is not a printable", False),
    # Malformed signature headers: eventstore/verify.py checks every entry's shape itself.
    "sig-no-comma": (_signature(lambda s: s.replace(",", "", 1)), MALFORMED, True),
    "sig-junk-first": (_signature(lambda s: "junk " + s), MALFORMED, True),
    "sig-double-space": (_signature(lambda s: "v1,AAAA  " + s), MALFORMED, True),
    "sig-padding-stripped": (_signature(lambda s: s.rstrip("=")), MALFORMED, True),
    "sig-v1-abcde": (_signature(lambda _: "v1,abcde"), MALFORMED, True),
    "sig-two-commas": (_signature(lambda s: s + ",extra"), MALFORMED, True),
    "sig-tab-separated": (_signature(lambda s: "v1,AAAA\t" + s), MALFORMED, True),
    "repeated-id": (_repeated("svix-id"), "svix-id header given more than once", False),
    "repeated-signature": (
        _repeated("svix-signature"),
        "svix-signature header given more than once",
        True,
    ),
    "repeated-webhook-timestamp": (
        lambda d: (
            [(k.replace("svix-", "webhook-"), v) for k, v in d.headers().items()]
            + [("webhook-timestamp", d.headers()["svix-timestamp"])],
            d.body,
        ),
        "webhook-timestamp header given more than once",
        True,
    ),
    "non-utf8-body": (lambda d: _other_body(d, b"\xff" + d.body), "not UTF-8", True),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path = tmp_path_factory.mktemp("rejections") / "audit.db"
    with running_server(path, new_secret(), env={"CLERK_AUDIT_MAX_BODY_BYTES": str(LIMIT)}) as s:
        yield s


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as shared:
        yield shared


def _fresh(server: Server) -> Delivery:
    assert server.secret is not None
    return Delivery(server.secret, new_event_id(), user_created())


@pytest.mark.parametrize("case", list(REJECTED))
def test_a_delivery_failing_a_check_is_a_400_naming_the_check(
    server: Server, client: httpx.Client, case: str
) -> None:
    spoil, message, id_recorded = REJECTED[case]
    delivery = _fresh(server)
    headers, body = spoil(delivery)
    agent = new_agent()
    response = client.post(
        server.ingest_url, content=body, headers=[*headers, ("user-agent", agent)]
    )
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    error = response.json()["error"]
    assert message in error
    row = only_delivery(server.db_path, agent)
    assert (row["outcome"], row["reason"], row["body_sha256"]) == ("rejected", error, sha256(body))
    claimed = [value for name, value in headers if name in ("svix-id", "webhook-id")]
    assert row["event_id"] == (claimed[0] if id_recorded else None)
    stamps = [value for name, value in headers if name == "svix-timestamp"]
    well_formed = len(stamps) == 1 and stamps[0].isascii() and stamps[0].isdigit()
    assert row["svix_timestamp"] == (
        int(stamps[0]) if well_formed and len(stamps[0]) <= 12 else None
    )
    assert [events_by_id(server.db_path, event_id) for event_id in claimed] == [[]] * len(claimed)


def test_the_same_event_signed_properly_is_then_accepted(
    server: Server, client: httpx.Client
) -> None:
    """The refusals above are about the spoilt header or body, not about the event."""
    delivery = _fresh(server)
    spoilt, _ = _with(delivery, svix_signature="v1,abcde")
    assert client.post(server.ingest_url, content=delivery.body, headers=spoilt).status_code == 400
    response = client.post(server.ingest_url, content=delivery.body, headers=delivery.headers())
    assert response.status_code == 200 and response.json()["status"] == "stored"


def _padded(size: int) -> bytes:
    """A JSON event of exactly ``size`` bytes."""
    shell = b'{"type": "user.created", "data": {"id": "user_pad"}, "pad": ""}'
    return shell[:-2] + b"x" * (size - len(shell)) + shell[-2:]


def _chunks(body: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_a_413_and_nothing_is_stored(
    server: Server, client: httpx.Client, streamed: bool
) -> None:
    assert server.secret is not None
    event_id, body, agent = new_event_id(), _padded(LIMIT + 1), new_agent()
    headers = {**signed_headers(server.secret, event_id, body), "user-agent": agent}
    content = _chunks(body) if streamed else body
    request = client.build_request("POST", server.ingest_url, content=content, headers=headers)
    assert ("content-length" in request.headers) is not streamed
    response = client.send(request)
    assert response.status_code == 413
    assert str(LIMIT) in response.json()["error"]
    row = only_delivery(server.db_path, agent)
    assert (row["outcome"], row["event_id"], row["body_sha256"]) == ("too_large", event_id, None)
    assert row["reason"] == response.json()["error"]
    assert events_by_id(server.db_path, event_id) == []
    again = client.get(f"{server.url}/healthz")  # the connection, or a new one, still works
    assert again.status_code == 200


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_accepted(
    server: Server, client: httpx.Client, streamed: bool
) -> None:
    assert server.secret is not None
    event_id, body = new_event_id(), _padded(LIMIT)
    headers = signed_headers(server.secret, event_id, body)
    response = client.post(
        server.ingest_url, content=_chunks(body) if streamed else body, headers=headers
    )
    assert response.status_code == 200, response.text
    assert events_by_id(server.db_path, event_id)[0]["body"] == body


def test_a_client_leaving_mid_body_still_leaves_one_delivery_row(server: Server) -> None:
    assert server.secret is not None
    body, agent = user_created(), new_agent()
    headers = {**signed_headers(server.secret, new_event_id(), body), "user-agent": agent,
               "content-length": str(len(body)), "host": "localhost"}  # fmt: skip
    head = "POST /webhooks/clerk HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    address = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((address[0], int(address[1])), timeout=30) as raw:
        raw.sendall(head.encode() + b"\r\n" + body[:100])
    server.wait_for_log("the client disconnected after 100 bytes")
    last = new_event_id()  # answered once its row is committed: the rows before it are too
    httpx.post(server.ingest_url, content=b"", headers={"svix-id": last}, timeout=30)
    server.wait_for_log(f"delivery rejected event_id={last}")
    (row,) = deliveries_by_agent(server.db_path, agent)
    assert row["outcome"] == "rejected"
    assert row["reason"] == "the client disconnected after 100 bytes of the body"
    assert "Traceback" not in server.log and "Exception" not in server.log
