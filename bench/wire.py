"""The load generator's HTTP/1.1 client: raw asyncio streams, keep-alive, pre-built requests.

Deliberately minimal, so that it is never the bottleneck: a request is one ``write`` of
ready bytes, a response is the head up to the blank line plus ``content-length`` bytes, and
checking it is a slice of the status line and a substring test on the body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

_CONTENT_LENGTH = b"content-length:"


@dataclass(slots=True)
class Tally:
    """What the connections saw, added up."""

    latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    stored: int = 0
    duplicate: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def record(self, status: bytes, body: bytes, latency_ns: int) -> None:
        self.latencies_ns.append(latency_ns)
        self.statuses[int(status)] += 1
        if b'"stored"' in body:
            self.stored += 1
        elif b'"duplicate"' in body:
            self.duplicate += 1


def request_bytes(port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """A complete ``POST`` request, ready to write."""
    lines = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes, bool]:
    """``(status, body, keep_alive)`` of the next response on ``reader``."""
    head = await reader.readuntil(b"\r\n\r\n")
    lowered = head.lower()
    start = lowered.find(_CONTENT_LENGTH)
    if start < 0:
        raise ConnectionError("response without content-length")
    end = lowered.index(b"\r\n", start)
    body = await reader.readexactly(int(lowered[start + len(_CONTENT_LENGTH) : end]))
    return head[9:12], body, b"connection: close" not in lowered


async def connection(
    port: int, next_request: Callable[[], bytes | None], deadline: float, tally: Tally
) -> None:
    """One keep-alive connection sending requests until ``deadline`` or until none are left."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline and (request := next_request()) is not None:
            started = time.perf_counter_ns()
            writer.write(request)
            try:
                status, body, keep_alive = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError) as error:
                tally.errors[type(error).__name__] += 1
                keep_alive = False
            else:
                tally.record(status, body, time.perf_counter_ns() - started)
            if not keep_alive:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def get_status(port: int, path: str) -> int | None:
    """The status of ``GET path``, or None if the server does not answer yet."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
        status, _body, _ = await read_response(reader)
        return int(status)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return None
    finally:
        writer.close()


class HealthProbe:
    """``GET /healthz`` over one keep-alive connection of its own (reopened if it drops): the
    server's log ``position`` and the projections' ``projected`` checkpoint."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def read(self) -> dict[str, object] | None:
        """The answer's JSON, or None if there was no 200 answer."""
        request = f"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{self._port}\r\n\r\n".encode()
        try:
            if self._streams is None:
                self._streams = await asyncio.open_connection("127.0.0.1", self._port)
            reader, writer = self._streams
            writer.write(request)
            status, body, keep_alive = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            return None
        if not keep_alive:
            self.close()
        if status != b"200":
            return None
        answer = json.loads(body)
        return answer if isinstance(answer, dict) else None

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def wait_until_healthy(port: int, timeout: float) -> None:
    """Poll ``GET /healthz`` until it answers 200.

    :raises TimeoutError: it did not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while await get_status(port, "/healthz") != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no 200 from GET /healthz on port {port} in {timeout:.0f} s")
        await asyncio.sleep(0.05)
