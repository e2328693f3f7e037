"""What the load generator sends: unique events, redeliveries among them, freshly signed.

Rendering bodies is the slow part, so the pool of (``svix-id``, body) pairs is rendered once
and cached in ``bench/work/`` as a stream of pickled chunks; a run loads only as many as it
needs and signs them with ``svix`` just before it starts (Svix rejects timestamps more than
5 minutes old). A redelivery re-sends an earlier request byte for byte: the same ``svix-id``
and body, as a Svix retry or a dashboard replay does.
"""

from __future__ import annotations

import base64
import hashlib
import pickle
import secrets
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from random import Random

from svix.webhooks import Webhook

from bench.bodies import Renderer
from bench.wire import request_bytes
from bench.workload import plan

POOL_EVENTS = 300_000
CHUNK = 10_000
SEED = 5
REDELIVERY_GAP = 128
"""A redelivery re-sends an event issued at least this many requests earlier."""
USER_AGENT = "Svix-Webhooks/1.76.0 (sender-bench; +https://www.svix.com/http-sender/)"

Event = tuple[str, bytes]


def new_secret() -> str:
    """A throwaway ``whsec_`` secret of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _render(job: tuple[int, list[int]]) -> list[Event]:
    """The events ``specs`` of ``(start, specs)``, sent from the ``start``-th on."""
    start, specs = job
    renderer = Renderer()
    rendered = (renderer.render(spec, sent) for sent, spec in enumerate(specs, start))
    return [(event.event_id, event.body) for event in rendered]


def _pool_path(work: Path) -> Path:
    probe = repr(_render((0, plan(50, seed=SEED)))).encode()
    return work / f"ingest-pool-{POOL_EVENTS}-{hashlib.sha256(probe).hexdigest()[:12]}.pickle"


def ensure_pool(work: Path) -> Path:
    """The cached pool of rendered events, rendered (in 2 processes) if missing."""
    path = _pool_path(work)
    if not path.exists():
        print(f"  ingest: rendering {POOL_EVENTS:,} bodies once", file=sys.stderr)
        for stale in work.glob("ingest-pool-*"):
            stale.unlink()
        write_pool(path, POOL_EVENTS, processes=2)
    return path


def write_pool(path: Path, events: int, *, processes: int = 1) -> None:
    """Render ``events`` events into a pool file at ``path`` (replaced at the end)."""
    specs = plan(events, seed=SEED)
    chunks = [(start, specs[start : start + CHUNK]) for start in range(0, len(specs), CHUNK)]
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as file, get_context("fork").Pool(processes) as pool:
        for rendered in pool.imap(_render, chunks):
            pickle.dump(rendered, file, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(path)


def load_pool(path: Path, count: int) -> list[Event]:
    """The first ``count`` events of the pool at ``path``."""
    events: list[Event] = []
    with path.open("rb") as file:
        while len(events) < count:
            try:
                events += pickle.load(file)
            except EOFError:
                break
    return events[:count]


def delivery_order(events: int, redeliveries: float, *, seed: int) -> list[int]:
    """Indexes into the events: each once, in order, with a ``redeliveries`` share of
    requests re-sending a random earlier one."""
    rng = Random(seed)
    order: list[int] = []
    issued = 0
    while issued < events:
        if issued > REDELIVERY_GAP and rng.random() < redeliveries:
            order.append(rng.randrange(issued - REDELIVERY_GAP))
        else:
            order.append(issued)
            issued += 1
    return order


def signed_requests(events: list[Event], secret: str, port: int) -> list[bytes]:
    """One request per event, signed now with ``secret``."""
    webhook = Webhook(secret)
    now = int(time.time())
    signed_at = datetime.fromtimestamp(now, tz=UTC)
    return [
        request_bytes(
            port, "/webhooks/clerk", _headers(webhook, event_id, body, now, signed_at), body
        )
        for event_id, body in events
    ]


def _headers(
    webhook: Webhook, event_id: str, body: bytes, now: int, signed_at: datetime
) -> dict[str, str]:
    return {
        "user-agent": USER_AGENT,
        "content-type": "application/json",
        "svix-id": event_id,
        "svix-timestamp": str(now),
        "svix-signature": webhook.sign(event_id, signed_at, body.decode()),
    }


def cycle(order: list[int], requests: list[bytes], *, wrap: bool) -> Iterator[bytes]:
    """The requests in delivery order; again from the start when ``wrap``."""
    while True:
        yield from (requests[index] for index in order)
        if not wrap:
            return
