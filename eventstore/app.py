"""The HTTP application: ``POST /webhooks/clerk`` and ``GET /healthz`` (CONTRACT §3).

This is the one place where our errors become HTTP answers (:func:`error_response`). Every
request to the ingest route leaves exactly one ``deliveries`` row, whatever its outcome. The
route reads, verifies and appends to the log, nothing else: the projections follow the log
in a process of their own, and ``/healthz`` only reads how far they got.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from eventstore.errors import (
    AuditStoreError,
    BodyIncomplete,
    BodyTooLarge,
    DeliveryRejected,
    FeedUnauthorized,
    StoreError,
)
from eventstore.feed import CommitSignal, Feed
from eventstore.log import sha256_hex
from eventstore.records import DeliveryRecord
from eventstore.settings import Settings
from eventstore.timefmt import now_iso
from eventstore.verify import Verifier, claimed_event_id, claimed_timestamp
from eventstore.writer import AppendJob, DeliveryJob, PositionJob
from eventstore.writer_process import ProcessWriter
from projections.progress import ProgressReader

log = logging.getLogger("clerk_audit.ingest")

RETRY_AFTER_SECONDS = "5"


def error_response(error: AuditStoreError) -> JSONResponse:
    """The HTTP answer for one of our errors (the one place they are translated). Its text is
    ``error.public``: a store error names its file only in the server's log."""
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if error.status == 503 else None
    if isinstance(error, FeedUnauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="clerk-audit feed"'}
    return JSONResponse({"error": error.public}, status_code=error.status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it is known to exceed ``limit`` bytes (never held
    whole in memory when it is too large)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes is larger than the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BodyIncomplete(f"the client disconnected after {size} bytes of the body") from None
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class Arrival:
    """What is known of a request before its body is checked."""

    received_at: str
    event_id: str | None
    svix_timestamp: int | None
    remote_addr: str | None
    user_agent: str | None

    @classmethod
    def of(cls, request: Request) -> Arrival:
        client = request.client.host if request.client else None
        return cls(
            now_iso(),
            claimed_event_id(request.headers),
            claimed_timestamp(request.headers),
            client,
            request.headers.get("user-agent"),
        )

    def delivery(self, **fields: object) -> DeliveryRecord:
        return DeliveryRecord(
            received_at=self.received_at,
            event_id=self.event_id,
            svix_timestamp=self.svix_timestamp,
            remote_addr=self.remote_addr,
            user_agent=self.user_agent,
            **fields,  # type: ignore[arg-type]
        )


class Ingest:
    """The ingest route: read, verify, append, answer."""

    def __init__(self, settings: Settings, writer: ProcessWriter) -> None:
        self._limit = settings.max_body_bytes
        self._verifier = Verifier(settings.secrets)
        self._writer = writer

    async def __call__(self, request: Request) -> Response:
        arrival = Arrival.of(request)
        body: bytes | None = None
        try:
            body = await read_body(request, self._limit)
            signed = self._verifier.verify(body, request.headers)
        except DeliveryRejected as error:
            return await self._reject(arrival, body, error)
        job = AppendJob(
            signed.event_id,
            signed.timestamp,
            arrival.received_at,
            body,
            arrival.remote_addr,
            arrival.user_agent,
        )
        try:
            appended = await self._writer.submit(job)
        except AuditStoreError as error:
            log.warning("delivery %s event_id=%s: %s", error.outcome, signed.event_id, error)
            return error_response(error)
        log.debug("delivery %s event_id=%s", appended.outcome, signed.event_id)
        answer = {
            "status": appended.outcome,
            "event_id": signed.event_id,
            "position": appended.position,
        }
        return Response(orjson.dumps(answer), media_type="application/json")  # as JSONResponse's

    async def _reject(
        self, arrival: Arrival, body: bytes | None, error: DeliveryRejected
    ) -> Response:
        digest = sha256_hex(body) if body is not None else None
        delivery = arrival.delivery(outcome=error.outcome, reason=str(error), body_sha256=digest)
        log.warning("delivery %s event_id=%s: %s", error.outcome, arrival.event_id, error)
        try:
            await self._writer.submit(DeliveryJob(delivery))
        except StoreError as store_error:
            log.error("%s delivery held until the store recovers: %s", error.outcome, store_error)
        return error_response(error)


class Service:
    """The running server: its writer exists between the lifespan's start and end."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._writer: ProcessWriter | None = None
        self._ingest: Ingest | None = None
        self._feed: Feed | None = None
        self._progress = ProgressReader(settings.projections_path)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        signal = CommitSignal(asyncio.get_running_loop())
        self._writer = ProcessWriter(
            self._settings.db_path,
            busy_timeout_ms=self._settings.busy_timeout_ms,
            on_commit=signal.committed,
        )
        await self._writer.start()
        self._ingest = Ingest(self._settings, self._writer)
        if self._settings.feed_token is not None:
            self._feed = Feed(self._settings.db_path, self._settings.feed_token, signal)
        try:
            yield
        finally:
            if self._feed is not None:
                self._feed.close()
            await self._writer.aclose()
            self._progress.close()

    async def ingest(self, request: Request) -> Response:
        assert self._ingest is not None, "the app's lifespan has not started"
        return await self._ingest(request)

    async def events(self, request: Request) -> Response:
        """``GET /events``: the log for downstream workers (``eventstore.feed``)."""
        assert self._feed is not None, "the app's lifespan has not started"
        try:
            return await self._feed.answer(request)
        except AuditStoreError as error:
            return error_response(error)

    async def healthz(self, request: Request) -> Response:
        """200 while the log can be written, with how far the projections have followed it."""
        assert self._writer is not None, "the app's lifespan has not started"
        try:
            position = await self._writer.submit(PositionJob())
        except AuditStoreError as error:
            return error_response(error)
        progress = self._progress.read()
        return JSONResponse(
            {"status": "ok", "position": position, "projected": progress.position,
             "projection_errors": progress.errors}
        )  # fmt: skip


INGEST_PATH = "/webhooks/clerk"


def create_app(settings: Settings) -> ASGIApp:
    """The ASGI app for ``settings``; the writer starts and stops with the app's lifespan.

    ``POST /webhooks/clerk`` goes straight to :class:`Ingest`: Starlette's router, middleware
    and exception wrappers cost about as much per request as verifying it, and the route
    handles its own errors. Everything else, the lifespan included, is Starlette's.
    """
    service = Service(settings)
    routes = [
        Route(INGEST_PATH, service.ingest, methods=["POST"]),  # for the 405 of other methods
        Route("/healthz", service.healthz, methods=["GET"]),
    ]
    if settings.feed_token is not None:  # no token: no route (404)
        routes.append(Route("/events", service.events, methods=["GET"]))
    rest = Starlette(routes=routes, lifespan=service.lifespan)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == INGEST_PATH:
            response = await service.ingest(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await rest(scope, receive, send)

    return app
