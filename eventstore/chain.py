"""The hash chain over the log: what makes an edit to the ``events`` table evident.

Each event's ``chain`` value commits to the previous one, its ``position``, its ``event_id``
and its ``body_sha256``::

    chain(n) = SHA-256(chain(n-1) || position (8 bytes, big-endian)
                       || len(event_id) (4 bytes) || event_id (UTF-8) || body_sha256 (32 bytes))

with 32 zero bytes before the first event. It is computed by the writer in the append's
transaction. It never needs the body itself, only its digest, so a redaction can replace a
body's personal fields and keep the chain intact. ``deliveries`` are not chained: they record
requests, not the trail of events, and what they hold besides outcomes (addresses and user
agents) is what a redaction must be free to erase.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

GENESIS = bytes(32)
"""The link before position 1."""
PROGRESS_EVERY = 10_000


def link(previous: bytes, position: int, event_id: str, body_sha256: str) -> bytes:
    """The chain value of one event, given the one before it (raw 32 bytes)."""
    name = event_id.encode()
    return hashlib.sha256(
        previous
        + position.to_bytes(8, "big")
        + len(name).to_bytes(4, "big")
        + name
        + bytes.fromhex(body_sha256)
    ).digest()


def links(previous: bytes, rows: list[tuple[int, str, str]]) -> list[bytes]:
    """The chain values of ``rows`` (``(position, event_id, body_sha256)`` in order)."""
    out: list[bytes] = []
    for position, event_id, body_sha256 in rows:
        previous = link(previous, position, event_id, body_sha256)
        out.append(previous)
    return out


@dataclass(frozen=True, slots=True)
class Break:
    """The first place the log does not verify."""

    position: int
    problem: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    events: int
    """Events read."""
    position: int
    """The last position that verified (the head, when nothing broke)."""
    head: str
    """The chain value at :attr:`position` (hex)."""
    broken: Break | None


Row = tuple[int, str, bytes, str, str | None]
"""``(position, event_id, body, body_sha256, chain)``."""


def _problem(row: Row, expected: int, previous: bytes, redacted: frozenset[int]) -> str | None:
    position, event_id, body, body_sha256, chain = row
    if position != expected:
        return f"expected position {expected} here, found {position}: events are missing"
    if chain is None:
        return "the event has no chain value"
    if position not in redacted and hashlib.sha256(body).hexdigest() != body_sha256:
        return "the body does not match its body_sha256"
    if link(previous, position, event_id, body_sha256).hex() != chain:
        return "the chain value does not follow from the event before it"
    return None


def verify_rows(
    rows: Iterable[Row],
    redacted: frozenset[int] = frozenset(),
    progress: Callable[[int], None] | None = None,
) -> ChainReport:
    """Recompute the chain over ``rows`` (the whole log in position order), stopping at the
    first break. ``redacted``: positions whose bodies a recorded redaction replaced (their
    digests are the originals', by design)."""
    previous, verified, count = GENESIS, 0, 0
    for row in rows:
        count += 1
        problem = _problem(row, verified + 1, previous, redacted)
        if problem is not None:
            return ChainReport(count, verified, previous.hex(), Break(verified + 1, problem))
        previous, verified = bytes.fromhex(row[4] or ""), row[0]
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    return ChainReport(count, verified, previous.hex(), None)
