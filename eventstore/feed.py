"""The log for downstream workers (CONTRACT §9): ``GET /events``, ``tail`` and ``export``.

Every event is written the same way everywhere, as one JSON object (:func:`event_json`): the
``events`` columns by name, in table order, and then, last, the body:

* ``"body": <the body's own bytes>`` for a stored event (``status`` ``ok``, so JSON): copied,
  never re-serialised, so its text in the line is byte-exact (``eventstore.transfer`` reads it
  back exactly). Where one line is needed (``tail``, ``export``) and the body spans several
  (a pretty-printed body), ``body`` is its JSON on one line and ``"body_text"`` the exact text;
* ``"body_text": "<the exact text as a JSON string>"`` for any other UTF-8 body (a quarantined
  one);
* ``"body_base64": "..."`` for a body that is not UTF-8.

Reading the feed
----------------
``GET /events?after=N&limit=L[&wait=S][&type=PREFIX...][&object_id=ID]`` answers
``{"events": [...], "next": M}``: the events after position ``N`` in position order, and the
cursor to send next. One writer assigns positions in commit order, so ``position > N`` never
misses an event committed later. With filters, a request looks at most :data:`SCAN_SPAN`
positions past ``N`` and ``next`` moves past the ones it looked at, so a worker interested in a
rare type never rereads the log. With ``wait``, a request that finds nothing waits up to ``S``
seconds for the writer's next commit (:class:`CommitSignal`) instead of answering at once,
and then :data:`GATHER_S` more for the commits after it; commits by other processes
(``import``, ``backfill``) are seen within :data:`POLL_S`.

Reads run in a small pool of threads, each with its own read-only connection, never on the
event loop and never on the writer's connection. The token is compared in constant time, as
SHA-256 digests, so neither its value nor its length shows in the answer's timing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from eventstore.engine import sqlite3
from eventstore.errors import BadFeedRequest, FeedUnauthorized, StoreError
from eventstore.jsondoc import load_json
from eventstore.location import LogLocation, open_log_reader
from eventstore.sql import Sql

log = logging.getLogger("clerk_audit.feed")

COLUMNS = (
    "position", "event_id", "event_type", "object_type", "object_id", "instance_id",
    "occurred_at", "received_at", "svix_timestamp", "body_sha256", "status",
    "quarantine_reason", "chain",
)  # fmt: skip
"""Every ``events`` column but ``body``, in the order they are written (the body comes last)."""
SELECT = (
    "SELECT position, CAST(json_object("
    + ", ".join(f"'{column}', {column}" for column in COLUMNS)
    + ") AS BLOB), status, body FROM events"
)
"""Each row as ``(position, its columns as a JSON object, status, body)``: SQLite writes the
columns' JSON (in C, and the same text on every run)."""

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_WAIT_S = 30.0
SCAN_SPAN = 100_000
"""Most positions one filtered request looks at."""
POLL_ENV = "CLERK_AUDIT_FEED_POLL_S"
POLL_S = float(os.environ.get(POLL_ENV, "") or 1.0)
"""How often a waiting request looks again without a signal (commits by other processes);
``CLERK_AUDIT_FEED_POLL_S`` changes it (the tests make it long, to see the signal work)."""
GATHER_S = 0.1
"""How long a waiting request, once a commit wakes it, lets the next commits gather before it
reads: a reader that keeps up then makes about ten requests a second under load rather than
one per group commit (about a hundred), each of them event-loop time taken from ingest
(bench/analysis.md). A worker sees an event at most this much later."""
READERS = 4
"""Threads (and read-only connections) serving the feed."""
PARAMETERS = frozenset({"after", "limit", "wait", "type", "object_id"})

Row = tuple[int, bytes, str, bytes]
"""``(position, the columns as a JSON object, status, body)``: see :data:`SELECT`."""


def _compact(body: bytes) -> bytes:
    """A stored event's JSON on one line (integers past 64 bits kept exact)."""
    value = load_json(body)
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def body_member(body: bytes, status: str, one_line: bool = True) -> bytes:
    """``,"body":...`` (and ``body_text``, or ``body_base64``): see the module docstring."""
    if status == "ok":
        if not one_line or (b"\n" not in body and b"\r" not in body):
            return b',"body":' + body
        return b',"body":' + _compact(body) + b',"body_text":' + orjson.dumps(body.decode())
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return b',"body_base64":"' + base64.b64encode(body) + b'"'
    return b',"body_text":' + orjson.dumps(text)


def event_json(row: Row, one_line: bool = True) -> bytes:
    """One event as a JSON object: its columns by name, then its body. ``one_line=False``
    (the feed) keeps a stored event's body as it is even when it spans several lines."""
    return row[1][:-1] + body_member(row[3], row[2], one_line) + b"}"


def encode_events(
    rows: Sequence[Row], one_line: bool, separator: bytes, head: bytes = b"", tail: bytes = b""
) -> bytes:
    """:func:`event_json` of every row, each followed by ``separator`` but the last, between
    ``head`` and ``tail``: one join of the rows' own pieces, so a stored event's body is
    copied once, not once per step (a feed page of 10,000 events is 30 MB)."""
    parts: list[bytes] = [head]
    add = parts.extend
    closing = b"}" + separator
    for row in rows:
        _, columns, status, body = row
        if status == "ok" and not (one_line and (b"\n" in body or b"\r" in body)):
            add((columns[:-1], b',"body":', body, closing))
        else:
            add((event_json(row, one_line), separator))
    if rows and separator:
        parts[-1] = parts[-1][: -len(separator)]
    parts.append(tail)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Filters:
    types: tuple[str, ...] = ()
    """``event_type`` prefixes (any of them); empty: every type."""
    object_id: str | None = None

    @property
    def any(self) -> bool:
        return bool(self.types) or self.object_id is not None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.types:
            clauses.append(
                "(" + " OR ".join("substr(event_type, 1, ?) = ?" for _ in self.types) + ")"
            )
            for prefix in self.types:
                params += [len(prefix), prefix]
        if self.object_id is not None:
            clauses.append("object_id = ?")
            params.append(self.object_id)
        return "".join(f" AND {clause}" for clause in clauses), params


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    next: int
    """The cursor after this page: the last position returned, or looked at."""


def read_page(conn: Sql, after: int, limit: int, filters: Filters) -> Page:
    """Up to ``limit`` events after position ``after`` that pass ``filters``, in one read
    transaction (so the head a filtered page moves to is the one its rows come from)."""
    if not filters.any:
        rows = _rows(conn, "WHERE position > ? ORDER BY position LIMIT ?", (after, limit))
        return Page(rows, rows[-1][0] if rows else after)
    where, params = filters.where()
    conn.execute("BEGIN")
    try:
        (head,) = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
        upper = min(head, after + SCAN_SPAN)
        rows = _rows(
            conn,
            f"WHERE position > ? AND position <= ?{where} ORDER BY position LIMIT ?",
            (after, upper, *params, limit),
        )
    finally:
        conn.execute("COMMIT")
    full = len(rows) == limit
    return Page(rows, rows[-1][0] if full else max(after, upper))


def _rows(conn: Sql, clause: str, params: Sequence[Any]) -> list[Row]:
    """The rows of ``SELECT ... FROM events <clause>`` as :data:`Row` (a PostgreSQL log writes
    the columns' JSON in ``eventstore.pg.pages``, byte for byte as SQLite does)."""
    if isinstance(conn, sqlite3.Connection):
        return conn.execute(f"{SELECT} {clause}", params).fetchall()
    from eventstore.pg.pages import rows

    return rows(conn, clause, params)


def iter_events(
    conn: Sql, after: int, filters: Filters | None = None, batch: int = 2000
) -> Iterator[Page]:
    """Pages of the log after ``after``, until they reach its head (``tail``, ``export``)."""
    filters = filters or Filters()
    while True:
        page = read_page(conn, after, batch, filters)
        if page.rows:
            yield page
        if page.next == after:
            return
        after = page.next


# The HTTP route ------------------------------------------------------------------------------


def _whole(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise BadFeedRequest(f"{name} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class FeedQuery:
    after: int
    limit: int
    wait: float
    filters: Filters

    @classmethod
    def parse(cls, params: Sequence[tuple[str, str]]) -> FeedQuery:
        """The query string's values, or :class:`BadFeedRequest` saying what is wrong."""
        unknown = sorted({key for key, _ in params} - PARAMETERS)
        if unknown:
            raise BadFeedRequest(f"unknown parameter {unknown[0]!r} (known: after, limit, "
                                 "wait, type, object_id)")  # fmt: skip
        single: dict[str, str] = {}
        types: list[str] = []
        for key, value in params:
            if key == "type":
                if not value:
                    raise BadFeedRequest("type must be an event type or its prefix, like user.")
                types.append(value)
            elif key in single:
                raise BadFeedRequest(f"{key} is given more than once")
            else:
                single[key] = value
        after = single.get("after")
        if after is not None and not after.isdigit():
            raise BadFeedRequest(f"after must be a position: a whole number >= 0, not {after!r}")
        object_id = single.get("object_id")
        if object_id == "":
            raise BadFeedRequest("object_id must not be empty")
        return cls(
            int(after) if after is not None else 0,
            _whole(single.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            float(_whole(single.get("wait"), "wait", 0, 0, int(MAX_WAIT_S))),
            Filters(tuple(types), object_id),
        )


class CommitSignal:
    """Wakes the requests waiting for new events when the writer commits.

    :meth:`committed` runs in the writer thread after each commit; it costs nothing while no
    request waits (one integer read), else one ``call_soon_threadsafe``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._watching = 0

    def committed(self) -> None:
        if self._watching:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    @property
    def current(self) -> asyncio.Event:
        """The event the next commit sets: take it before reading, so no commit is missed."""
        return self._event

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """While a request may wait: commits are signalled."""
        self._watching += 1
        try:
            yield
        finally:
            self._watching -= 1


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Feed:
    """``GET /events``: see the module docstring."""

    def __init__(self, db_path: LogLocation, token: str, signal: CommitSignal) -> None:
        self._db_path = db_path
        self._token = _digest(token)
        self._signal = signal
        self._local = threading.local()
        self._connections: list[Sql] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(READERS, thread_name_prefix="clerk-audit-feed")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def authorise(self, header: str | None) -> None:
        """:raises FeedUnauthorized: unless ``Authorization: Bearer <the token>``."""
        scheme, _, given = (header or "").partition(" ")
        ok = hmac.compare_digest(_digest(given.strip()), self._token)
        if not (ok and scheme.lower() == "bearer"):
            raise FeedUnauthorized("a valid bearer token is required (Authorization: Bearer ...)")

    def _conn(self) -> Sql:
        conn: Sql | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_log_reader(self._db_path)
            with self._lock:
                self._connections.append(conn)
        return conn

    def _read(self, after: int, query: FeedQuery) -> tuple[bytes, int, bool]:
        """The answer's body for the page after ``after``, its ``next``, and whether it has
        events."""
        try:
            page = read_page(self._conn(), after, query.limit, query.filters)
        except StoreError:
            self._forget()  # a PostgreSQL connection the database dropped: a new one next time
            raise
        tail = b'],"next":' + str(page.next).encode() + b"}"
        body = encode_events(page.rows, False, b",", b'{"events":[', tail)
        return body, page.next, bool(page.rows)

    def _forget(self) -> None:
        conn: Sql | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._connections.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()

    async def answer(self, request: Request) -> Response:
        """The page for ``request`` (after waiting, with ``wait``), as JSON bytes."""
        self.authorise(request.headers.get("authorization"))
        query = FeedQuery.parse(request.query_params.multi_items())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + query.wait
        after = query.after
        with self._signal.watching() if query.wait else contextlib.nullcontext():
            commit = self._signal.current
            body, after, found = await loop.run_in_executor(self._pool, self._read, after, query)
            if not found and query.wait:
                log.debug("feed: waiting up to %g s for events after %d", query.wait, after)
            while not found and (remaining := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(commit.wait(), min(remaining, POLL_S))
                    # woken by a commit (not the poll's timeout): let the next ones gather
                    await asyncio.sleep(min(GATHER_S, max(0.0, deadline - loop.time())))
                commit = self._signal.current
                body, after, found = await loop.run_in_executor(
                    self._pool, self._read, after, query
                )
        return Response(body, media_type="application/json")
