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
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

GENESIS = bytes(32)
"""The link before position 1."""
_HEAD = struct.Struct(">QI").pack
"""The position (8 bytes) and the ``event_id``'s length (4 bytes), big-endian."""


def link(previous: bytes, position: int, event_id: str, body_sha256: str) -> bytes:
    """The chain value of one event, given the one before it (raw 32 bytes)."""
    name = event_id.encode()
    preimage = previous + _HEAD(position, len(name)) + name + bytes.fromhex(body_sha256)
    return hashlib.sha256(preimage).digest()


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


def _first_problem(
    rows: Sequence[Row], previous: bytes, expected: int, redacted: frozenset[int]
) -> tuple[int, str] | None:
    """The index and kind of the first row of ``rows`` that does not verify, given the chain
    value before them: a missing position, a body that does not match its ``body_sha256``
    (unless a recorded redaction replaced it), or a chain value that does not follow."""
    sha256 = hashlib.sha256
    for index, (position, event_id, body, body_sha256, chain) in enumerate(rows):
        if position != expected + index:
            return index, (f"expected position {expected + index} here, found {position}: "
                           "events are missing")  # fmt: skip
        if sha256(body).hexdigest() != body_sha256 and position not in redacted:
            return index, "the body does not match its body_sha256"
        if chain is None:
            return index, "the event has no chain value"
        previous = link(previous, position, event_id, body_sha256)
        if previous.hex() != chain:  # stored as lowercase hex; anything else is an edit
            return index, "the chain value does not follow from the event before it"
    return None


def verify_rows(
    batches: Iterable[Sequence[Row]],
    redacted: frozenset[int] = frozenset(),
    progress: Callable[[int], None] | None = None,
    *,
    previous: bytes = GENESIS,
    first: int = 1,
    last: int | None = None,
) -> ChainReport:
    """Recompute the chain over ``batches`` of rows in position order, from ``first`` (whose
    link follows ``previous``) to ``last`` (the end of what was read, when None), stopping at
    the first break. ``redacted``: positions whose bodies a recorded redaction replaced (their
    digests are the originals', by design)."""
    verified, count = first - 1, 0
    for rows in batches:
        broken = _first_problem(rows, previous, verified + 1, redacted)
        if broken is not None:
            index, problem = broken
            before = bytes.fromhex(rows[index - 1][4] or "") if index else previous
            return ChainReport(count + index + 1, verified + index, before.hex(),
                               Break(verified + index + 1, problem))  # fmt: skip
        count += len(rows)
        verified += len(rows)
        previous = bytes.fromhex(rows[-1][4] or "")
        if progress is not None:
            progress(len(rows))
    if last is not None and verified < last:
        missing = Break(verified + 1, f"expected position {verified + 1} here, found none: "
                        "events are missing")  # fmt: skip
        return ChainReport(count, verified, previous.hex(), missing)
    return ChainReport(count, verified, previous.hex(), None)
