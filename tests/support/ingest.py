"""Helpers for the ingest tests: tagged requests, unique bodies, one request's delivery row."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

import httpx

from eventstore.location import LogLocation
from eventstore.samples import sample_body
from tests.support.signing import signed_headers
from tests.support.store import deliveries_by_agent


def new_agent() -> str:
    """A unique ``user-agent`` that finds one request's ``deliveries`` rows again."""
    return "clerk-audit-test/" + secrets.token_hex(8)


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def user_created(user_id: str | None = None) -> bytes:
    """The ``user.created`` sample for a user of its own (so tests do not share entities)."""
    document = json.loads(sample_body("user.created"))
    document["data"]["id"] = user_id or "user_" + secrets.token_hex(10)
    return json.dumps(document, indent=2).encode()


def signed(
    secret: str, event_id: str, body: bytes, *, agent: str, at: int | None = None
) -> dict[str, str]:
    """Signed svix headers plus the request's tag."""
    return {**signed_headers(secret, event_id, body, at=at), "user-agent": agent}


def post(client: httpx.Client, url: str, body: Any, headers: Any) -> httpx.Response:
    return client.post(url, content=body, headers=headers)


def only_delivery(db_path: LogLocation, agent: str) -> dict[str, Any]:
    """The single ``deliveries`` row of the request tagged ``agent`` (fails if not exactly one)."""
    rows = deliveries_by_agent(db_path, agent)
    assert len(rows) == 1, rows
    return rows[0]
