"""Time values as the store writes them: ISO-8601 UTC text with milliseconds."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

SECONDS_CUTOFF = 100_000_000_000
"""Clerk timestamps below 10^11 are seconds (spec examples), at or above are milliseconds."""
LAST_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last instant ISO-8601 text can hold."""
_DAY_MS = 86_400_000
_DATES: dict[int, str] = {}
"""``YYYY-MM-DD`` per day number: a rebuild formats millions of times on few distinct days."""


def normalise_ms(value: object) -> int | None:
    """A Clerk timestamp (ms, or seconds in old examples) as integer ms; None if unusable."""
    if type(value) is int and SECONDS_CUTOFF <= value <= LAST_MS:
        return value  # the usual case, first
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value < 0 or value > LAST_MS:  # NaN, or past year 9999
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


def _date(day: int) -> str:
    date = _DATES.get(day)
    if date is None:
        if len(_DATES) > 100_000:
            _DATES.clear()
        date = _DATES[day] = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")
    return date


_SIXTY = [f"{n:02d}" for n in range(60)]
_MINUTES = [f"T{h:02d}:{m}:" for h in range(24) for m in _SIXTY]
_CLOCK = [minute + second + "." for minute in _MINUTES for second in _SIXTY]
"""``THH:MM:SS.`` per second of the day, joined from parts: formatting all 86,400 took 0.14 s
at every import, paid by each CLI command and each rebuild or verify worker."""
_MILLIS = [f"{n:03d}Z" for n in range(1000)]


def iso_ms(ms: int) -> str:
    """``1754308800123`` -> ``"2025-08-04T12:00:00.123Z"`` (``ms`` from 0 to :data:`LAST_MS`)."""
    day, rest = divmod(ms, _DAY_MS)
    second, millis = divmod(rest, 1000)
    return _date(day) + _CLOCK[second] + _MILLIS[millis]


def now_ms() -> int:
    """The current time as integer ms since the epoch."""
    return time.time_ns() // 1_000_000


def now_iso() -> str:
    """The current time as ISO-8601 UTC text with milliseconds."""
    return iso_ms(now_ms())
