"""Time values as the store writes them: ISO-8601 UTC text with milliseconds."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

SECONDS_CUTOFF = 100_000_000_000
"""Clerk timestamps below 10^11 are seconds (spec examples), at or above are milliseconds."""


def normalise_ms(value: object) -> int | None:
    """A Clerk timestamp (ms, or seconds in old examples) as integer ms; None if unusable."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value < 0 or value > 253_402_300_799_999:  # NaN, or past year 9999
        return None
    ms = int(value)
    return ms * 1000 if ms < SECONDS_CUTOFF else ms


def occurred_ms(timestamp: object, data: Mapping[str, object] | None) -> int | None:
    """An event's time (CONTRACT §6): the envelope ``timestamp``, else ``data.updated_at``, else
    ``data.created_at``; None when none is a usable timestamp."""
    candidates = (
        (timestamp, data.get("updated_at"), data.get("created_at")) if data else (timestamp,)
    )
    for value in candidates:
        ms = normalise_ms(value)
        if ms is not None:
            return ms
    return None


def iso_ms(ms: int) -> str:
    """``1754308800123`` -> ``"2025-08-04T12:00:00.123Z"``."""
    seconds, millis = divmod(ms, 1000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z"


def now_ms() -> int:
    """The current time as integer ms since the epoch."""
    return time.time_ns() // 1_000_000


def now_iso() -> str:
    """The current time as ISO-8601 UTC text with milliseconds."""
    return iso_ms(now_ms())
