"""The ingest server's HTTP layer: uvicorn, bounded against slow and hostile clients.

Left to itself, uvicorn (httptools) waits for request headers forever and buffers them without
limit, and a client trickling its body holds its request, and a SIGTERM shutdown, for as long
as it likes. :func:`run_server` runs it with these bounds, all kept in the protocol (one class
per connection) so that a request arriving whole in one read costs no timer at all:

* a request's headers must be complete within :data:`HEADER_TIMEOUT_S` of the connection (or
  of the first byte after an answer), else 408 and the connection is closed; headers larger
  than :data:`MAX_HEADER_BYTES` get 431 and the connection is closed;
* an idle keep-alive connection is closed after :data:`KEEP_ALIVE_TIMEOUT_S`;
* a body must be whole within :data:`BODY_TIMEOUT_S` of its headers, else 408 and the
  connection is closed; the app sees the client gone (``BodyIncomplete``: a ``deliveries`` row);
* on SIGTERM, requests still receiving their body are cut off at once, requests fully received
  are answered, and whatever still runs after :data:`GRACEFUL_SHUTDOWN_S` is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from eventstore.errors import ConfigurationError

HEADER_TIMEOUT_S = 10.0
HEADER_TIMEOUT_ENV = "CLERK_AUDIT_HEADER_TIMEOUT_S"
MAX_HEADER_BYTES = 64 * 1024
"""The URL plus header names and values; also the most read before the headers end."""
BODY_TIMEOUT_S = 30.0
BODY_TIMEOUT_ENV = "CLERK_AUDIT_BODY_TIMEOUT_S"
KEEP_ALIVE_TIMEOUT_S = 5
GRACEFUL_SHUTDOWN_S = 3
"""After SIGTERM, how long answers in progress may take; the whole stop stays under 5 s."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds that tests may shorten through the environment."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    max_header_bytes: int = MAX_HEADER_BYTES
    body_timeout_s: float = BODY_TIMEOUT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        return cls(
            header_timeout_s=_seconds(env, HEADER_TIMEOUT_ENV, HEADER_TIMEOUT_S),
            body_timeout_s=_seconds(env, BODY_TIMEOUT_ENV, BODY_TIMEOUT_S),
        )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ConfigurationError(f"{name} must be a positive number of seconds")
    return value


class _HeadersTooLarge(Exception):
    """Raised from the parser's callback to stop parsing a request with oversized headers."""


HELD_BYTES = 65_536
"""The most a connection holds back for the end of a loop turn: a larger write goes out at
once, so that the transport's flow control (uvicorn's ``drain``) sees every byte of a long
response in time."""


class _OneSendPerTurn:
    """A connection's transport whose writes within one turn of the event loop leave in one
    system call: uvicorn writes a response's head and its body separately, and on this path a
    ``send`` costs as much as verifying the request. Everything else is the transport's own;
    closing sends what is held first."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self._send)
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes >= HELD_BYTES:
            self._send()

    def _send(self) -> None:
        data = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        if data and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._send()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for request headers and bodies, a size bound
    on headers, and a shutdown that does not wait for bodies still arriving."""

    limits: ClassVar[Limits] = Limits()
    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _body_deadline: float | None = None
    """When the current body must be whole by (loop time); None when none is awaited. Its timer
    is not cancelled when the body arrives but checks this, so most requests arm none."""
    _in_headers = True
    """True from the end of a request (or the connection's start) until the next one's headers
    are complete: what arrives meanwhile counts towards the header size bound."""
    _header_bytes = 0
    _headers_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        one_send = _OneSendPerTurn(transport, asyncio.get_running_loop())
        super().connection_made(one_send)  # type: ignore[arg-type]
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        if self._body_timer is not None:
            self._body_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count what arrives before the headers end and refuse it past the bound; then start
        the deadline for whatever is now awaited."""
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.limits.max_header_bytes:
            self._refuse_headers()
        elif self._header_timer is None and self.cycle is not None:
            self._await_rest(self.cycle)

    def on_headers_complete(self) -> None:
        """Refuse headers over the bound (measured exactly only when more than the bound arrived
        with them: a body may have come in the same read)."""
        self._headers_arrived()
        self._in_headers = False
        limit = self.limits.max_header_bytes
        if self._header_bytes > limit and self._header_size() > limit:
            self._headers_too_large = True
            raise _HeadersTooLarge  # httptools stops; uvicorn then calls send_400_response
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_deadline = None
        self._in_headers = True
        self._header_bytes = 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._headers_too_large:
            self._refuse_headers()
        else:
            super().send_400_response(msg)

    def shutdown(self) -> None:
        """Cut off a request whose body is still arriving: its client could otherwise hold the
        shutdown as long as it likes (the app sees it gone, and records the delivery)."""
        if self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete:
            self.transport.close()
        else:
            super().shutdown()

    def _await_rest(self, cycle: RequestResponseCycle) -> None:
        """After a read with no headers pending: bytes after an answer (a next request, or just
        a CRLF, which stops uvicorn's keep-alive timer) start the header deadline, and a body
        not yet whole starts the body deadline."""
        if cycle.response_complete:
            self._await_headers()
        elif cycle.more_body and self._body_deadline is None:
            self._body_deadline = self.loop.time() + self.limits.body_timeout_s
            if self._body_timer is None:
                self._body_timer = self.loop.call_at(self._body_deadline, self._check_body)

    def _header_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) for name, value in self.headers)

    def _await_headers(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._too_slow)

    def _headers_arrived(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        self.logger.debug("408 to %s: request headers not complete in time", self._peer())
        self._refuse(408, "request headers not complete in time")

    def _check_body(self) -> None:
        """The body timer: a later request's deadline sets it again; a past one is enforced."""
        self._body_timer = None
        deadline = self._body_deadline
        if deadline is not None and deadline > self.loop.time():
            self._body_timer = self.loop.call_at(deadline, self._check_body)
        elif deadline is not None:
            self._body_too_slow()

    def _body_too_slow(self) -> None:
        self.logger.info("408 to %s: request body not complete in time", self._peer())
        if self.cycle.response_started:
            self.transport.close()
        else:
            self._refuse(408, "request body not complete in time")

    def _refuse_headers(self) -> None:
        self.logger.warning("431 to %s: request headers too large", self._peer())
        self._refuse(431, "request headers too large")

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` with ``reason`` and close the connection."""
        if self.transport.is_closing():
            return
        body = reason.encode("ascii")
        head = b"content-type: text/plain\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
        self.transport.write(STATUS_LINE[status] + head % len(body) + body)
        self.transport.close()

    def _peer(self) -> str:
        return self.client[0] if self.client else "?"


def _protocol(limits: Limits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn makes one of per connection, with ``limits``."""

    class Configured(GuardedHttpToolsProtocol):
        pass

    Configured.limits = limits
    return Configured


def _config(app: ASGIApp, limits: Limits, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_protocol(limits),
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        log_config=None,
        log_level=log_level,
        access_log=False,
    )


def run_server(app: ASGIApp, *, host: str, port: int, log_level: str) -> None:
    """Serve ``app`` with uvicorn on ``host:port`` with the bounds above, until SIGTERM/SIGINT.

    :raises ConfigurationError: a bound set in the environment is not a positive number.
    """
    server = uvicorn.Server(_config(app, Limits.from_env(os.environ), host, port, log_level))
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT, raised again once the server stopped
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
