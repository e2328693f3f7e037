"""Feed readers that follow the log during an ingest run, as workers would (issue 15's "the
feed's readers slow ingest by at most 10%").

Each reader long-polls ``GET /events?after=N&limit=1000&wait=5`` over one keep-alive
connection of its own, from position 0, taking each answer's ``next``, until the load's
deadline. They run in the load generator's event loop (a separate process from the server,
as a worker is), with the bearer token from ``CLERK_AUDIT_FEED_TOKEN``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.wire import read_response

LIMIT = 1000
WAIT_S = 5


@dataclass(slots=True)
class Reads:
    """What the readers did, added up."""

    requests: int = 0
    events: int = 0
    failures: int = 0


def _request(port: int, token: str, after: int) -> bytes:
    return (
        f"GET /events?after={after}&limit={LIMIT}&wait={WAIT_S} HTTP/1.1\r\n"
        f"host: 127.0.0.1:{port}\r\nauthorization: Bearer {token}\r\n\r\n"
    ).encode()


def _next(body: bytes) -> int:
    """The ``next`` of an answer (the last member, as the feed writes it)."""
    return int(body[body.rindex(b'"next":') + 7 : -1])


async def follow(port: int, token: str, deadline: float, reads: Reads) -> None:
    """One reader following the log from position 0 until ``deadline``: the last long poll
    may end up to :data:`WAIT_S` after it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    after = 0
    try:
        while time.perf_counter() < deadline:
            writer.write(_request(port, token, after))
            try:
                status, body, keep_alive = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError):
                reads.failures += 1
                return
            reads.requests += 1
            if status != b"200" or not keep_alive:
                reads.failures += 1
                return
            new = _next(body)
            reads.events += new - after
            after = new
    finally:
        writer.close()


async def run_readers(port: int, token: str, count: int, deadline: float, reads: Reads) -> None:
    """``count`` readers until ``deadline`` (or until cancelled: the load generator cancels
    them when its load ends, instead of waiting out their last long poll)."""
    await asyncio.gather(*(follow(port, token, deadline, reads) for _ in range(count)))
