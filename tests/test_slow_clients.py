"""Slow and hostile HTTP clients against a real server (``eventstore.http_server``): headers
that never finish, headers too large, a body trickled past its deadline, and SIGTERM while a
body trickles, each over raw loopback sockets; the server answers everyone else meanwhile."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from select import select

import httpx

from eventstore.engine import sqlite3
from eventstore.http_server import BODY_TIMEOUT_ENV, HEADER_TIMEOUT_ENV
from tests.support.ingest import new_agent, only_delivery, signed, user_created
from tests.support.server import Server, running_server
from tests.support.signing import new_event_id
from tests.support.store import events_by_id

WAIT_S = 15.0
"""The longest any test waits for the server to do something it should do within 1 s."""
STOP_BOUND_S = 8.0


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", _port(server)), timeout=WAIT_S)


def _until_closed(sock: socket.socket, within: float = WAIT_S) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed);
    fails if it is still open after ``within`` seconds."""
    deadline = time.monotonic() + within
    received = b""
    with closing(sock):
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            except TimeoutError:
                raise AssertionError(f"still open after {within} s: {received!r}") from None
            if not chunk:
                return received
            received += chunk


def _response(sock: socket.socket) -> bytes:
    """One whole response with a ``content-length``, read from a connection kept open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _request_head(server: Server, headers: dict[str, str], length: int) -> bytes:
    lines = ["POST /webhooks/clerk HTTP/1.1", f"host: 127.0.0.1:{_port(server)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _signed_request(server: Server, agent: str) -> tuple[str, bytes, bytes]:
    """``(event_id, head, body)`` of a new signed ``user.created`` delivery tagged ``agent``."""
    assert server.secret is not None
    event_id, body = new_event_id(), user_created()
    head = _request_head(server, signed(server.secret, event_id, body, agent=agent), len(body))
    return event_id, head, body


def _poll(condition: Callable[[], bool], within: float = WAIT_S) -> None:
    """Wait (a bounded poll) until ``condition()`` holds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not true within {within} s: {condition}"
        time.sleep(0.02)


def _healthy(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz", timeout=WAIT_S).status_code == 200


def test_connections_that_never_finish_their_headers_are_closed(db_path: Path, secret: str) -> None:
    env = {HEADER_TIMEOUT_ENV: "1"}
    with running_server(db_path, secret, env=env) as server:
        stalled = [_connect(server) for _ in range(200)]
        for sock in stalled:
            sock.sendall(b"POST /webhooks/clerk HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-le")
        idle = _connect(server)  # an answer, then a lone CRLF stops uvicorn's keep-alive timer
        idle.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        assert _response(idle).startswith(b"HTTP/1.1 200")
        idle.sendall(b"\r\n")
        event_id = new_event_id()
        stored = server.post(event_id, user_created())
        assert stored.status_code == 200 and stored.json()["status"] == "stored"
        for sock in [*stalled, idle]:
            assert _until_closed(sock).startswith(b"HTTP/1.1 408 ")
        assert len(events_by_id(db_path, event_id)) == 1
        _healthy(server)


def test_headers_larger_than_the_bound_are_refused(db_path: Path, secret: str) -> None:
    with running_server(db_path, secret) as server:
        sock = _connect(server)
        padding = b"x-padding: " + b"a" * (1 << 20) + b"\r\n"
        request = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n" + padding + b"\r\n"
        with suppress(BrokenPipeError, ConnectionResetError):  # refused before all was sent
            sock.sendall(request)
        answer = _until_closed(sock)
        # the 431 may be lost to the reset of a connection closed with unread bytes
        assert answer.startswith(b"HTTP/1.1 431 ") or answer == b"", answer[:100]
        server.wait_for_log("431 to 127.0.0.1: request headers too large")
        _healthy(server)


def test_a_body_trickled_past_its_deadline_is_cut_off_and_recorded(
    db_path: Path, secret: str
) -> None:
    with running_server(db_path, secret, env={BODY_TIMEOUT_ENV: "1"}) as server:
        agent = new_agent()
        event_id, head, body = _signed_request(server, agent)
        sock = _connect(server)
        sock.sendall(head)
        deadline = time.monotonic() + WAIT_S
        for byte in body:  # a byte every 0.1 s, until the server answers
            assert time.monotonic() < deadline, "the trickled body was never cut off"
            sock.sendall(bytes([byte]))
            if select([sock], [], [], 0.1)[0]:
                break
        assert _until_closed(sock).startswith(b"HTTP/1.1 408 ")
        _poll(lambda: bool(events_by_id(db_path, event_id)) or _recorded(db_path, agent))
        delivery = only_delivery(db_path, agent)
        assert (delivery["event_id"], delivery["outcome"]) == (event_id, "rejected")
        assert events_by_id(db_path, event_id) == []
        _healthy(server)


def _recorded(db_path: Path, agent: str) -> bool:
    with closing(sqlite3.connect(db_path, timeout=WAIT_S)) as conn:
        query = "SELECT count(*) FROM deliveries WHERE user_agent = ?"
        return bool(conn.execute(query, (agent,)).fetchone()[0])


@contextmanager
def _write_locked(db_path: Path) -> Iterator[Callable[[], None]]:
    """Hold the log's write lock (the server's writer waits for it) until the yielded function
    is called, or the block ends."""
    conn = sqlite3.connect(db_path, timeout=WAIT_S, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn.rollback
    finally:
        conn.close()


def _unread(server_port: int, client_ports: set[int]) -> dict[int, int]:
    """Bytes not yet read by the server on its end of each connection from ``client_ports``
    (the kernel's receive queues, from ``/proc/net/tcp``)."""
    unread = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if local == server_port and remote in client_ports:
            unread[remote] = int(fields[4].split(":")[1], 16)
    return unread


def _all_read(server: Server, socks: list[socket.socket]) -> Callable[[], bool]:
    ports = {sock.getsockname()[1] for sock in socks}

    def done() -> bool:
        unread = _unread(_port(server), ports)
        return len(unread) == len(ports) and not any(unread.values())

    return done


def test_sigterm_answers_every_complete_request_and_does_not_wait_for_a_trickle(
    db_path: Path, secret: str
) -> None:
    with running_server(db_path, secret) as server:
        trickler_agent, agent = new_agent(), new_agent()
        _, head, body = _signed_request(server, trickler_agent)
        trickler = _connect(server)
        trickler.sendall(head + body[:10])
        with _write_locked(db_path) as release:  # keeps the complete requests in flight
            requests = [_signed_request(server, agent) for _ in range(20)]
            complete = [_connect(server) for _ in requests]
            for sock, (_, request_head, request_body) in zip(complete, requests, strict=True):
                sock.sendall(request_head + request_body)
            _poll(_all_read(server, [trickler, *complete]))
            server.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            release()
        server.process.wait(timeout=30)
        stopped_in = time.monotonic() - started
        assert stopped_in < STOP_BOUND_S, server.log
        answers = [_until_closed(sock) for sock in complete]
        assert [answer[:12] for answer in answers] == [b"HTTP/1.1 200"] * len(complete)
        assert _until_closed(trickler) == b""
    assert all(events_by_id(db_path, event_id) for event_id, _, _ in requests)
    assert only_delivery(db_path, trickler_agent)["outcome"] == "rejected"
