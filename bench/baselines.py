"""The ingest baselines, each served exactly as our server is (one uvicorn process, uvloop,
httptools, no access log, log level warning): ``python -m bench.baselines bare|naive``.

* ``bare``: a Starlette route that reads the body and answers 200: the HTTP ceiling.
* ``naive-pg``: the same on PostgreSQL (``--db postgresql://...``): one ``INSERT`` per request
  in autocommit mode, a commit per request, on the event loop.
* ``naive``: the obvious design: verify with svix, then one ``INSERT`` in its own transaction
  (one fsync'd commit per request: WAL, ``synchronous=FULL``) on the event loop, on a minimal
  table (no parsing, projections or ``deliveries``): what group commit has to beat.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from svix.webhooks import Webhook, WebhookVerificationError

from eventstore.engine import sqlite3
from eventstore.timefmt import now_iso

UVICORN_SETTINGS = {
    "loop": "uvloop",
    "http": "httptools",
    "access_log": False,
    "log_level": "warning",
}
NAIVE_SCHEMA = """CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL,
    svix_timestamp INTEGER NOT NULL,
    body BLOB NOT NULL
)"""
NAIVE_PG_SCHEMA = NAIVE_SCHEMA.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY").replace(
    "BLOB", "BYTEA"
)
NAIVE_INSERT = (
    "INSERT INTO events (event_id, received_at, svix_timestamp, body) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (event_id) DO NOTHING"
)
SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def bare(request: Request) -> Response:
    await request.body()
    return Response(b'{"status":"ok"}', media_type="application/json")


def bare_app() -> Starlette:
    """The HTTP ceiling: read the body, answer 200."""
    return Starlette(
        routes=[
            Route("/webhooks/clerk", bare, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def naive_app(db_path: Path, secret: str) -> Starlette:
    """Verify, then one committed ``INSERT`` per request, blocking the loop while it commits."""
    webhook = Webhook(secret)
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(NAIVE_SCHEMA)

    async def receive(request: Request) -> Response:
        body = await request.body()
        headers = {name: request.headers.get(name, "") for name in SVIX_HEADERS}
        try:
            webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        values = (headers["svix-id"], now_iso(), int(headers["svix-timestamp"]), body)
        stored = conn.execute(NAIVE_INSERT, values).rowcount
        status = "stored" if stored else "duplicate"
        return JSONResponse({"status": status, "event_id": headers["svix-id"]})

    return Starlette(
        routes=[
            Route("/webhooks/clerk", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def naive_pg_app(url: str, secret: str) -> Starlette:
    """Verify, then one ``INSERT`` committed on its own (autocommit) per request on the loop."""
    import psycopg

    webhook = Webhook(secret)
    conn = psycopg.connect(url, autocommit=True, options="-c synchronous_commit=on")
    conn.execute(NAIVE_PG_SCHEMA)

    async def receive(request: Request) -> Response:
        body = await request.body()
        headers = {name: request.headers.get(name, "") for name in SVIX_HEADERS}
        try:
            webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        values = (headers["svix-id"], now_iso(), int(headers["svix-timestamp"]), body)
        stored = conn.execute(NAIVE_INSERT.replace("?", "%s"), values).rowcount
        status = "stored" if stored else "duplicate"
        return JSONResponse({"status": status, "event_id": headers["svix-id"]})

    return Starlette(
        routes=[
            Route("/webhooks/clerk", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__)
    parser.add_argument("app", choices=("bare", "naive", "naive-pg"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", help="the naive store (created): a path, or a URL for naive-pg")
    args = parser.parse_args()
    secret = os.environ.get("CLERK_WEBHOOK_SIGNING_SECRET", "")
    if args.app == "bare":
        app = bare_app()
    elif args.app == "naive-pg":
        app = naive_pg_app(args.db, secret)
    else:
        app = naive_app(Path(args.db), secret)
    uvicorn.run(app, host=args.host, port=args.port, **UVICORN_SETTINGS)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
