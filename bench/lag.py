"""How far the projections trail the log during an ingest run, from ``GET /healthz``.

``/healthz`` answers the log's ``position`` and the projections' checkpoint ``projected``. The
load generator samples it every ``--sample-ms`` on a connection of its own while the load runs,
then, once the last answer of the load is in, polls it every :data:`CATCH_UP_POLL_S` until
``projected == position`` (the catch-up).

Two lags are worked out from the samples taken during the load:

* **in events**: ``position - projected`` at each sample;
* **in seconds**: for each sample, how long until a later sample (or a catch-up poll) showed
  ``projected`` at or past that sample's ``position``: the time an event acknowledged then
  waited for the projections. Measured on the samples, so it is an upper bound with the
  sampling period as its resolution (0 when the same sample already shows it projected).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.stats import percentile
from bench.wire import HealthProbe

CATCH_UP_POLL_S = 0.01


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    """``time.perf_counter()`` when the answer arrived."""
    position: int
    projected: int
    errors: int


async def _sample(probe: HealthProbe) -> Sample | None:
    answer = await probe.read()
    if answer is None:
        return None
    return Sample(
        time.perf_counter(),
        int(answer.get("position", 0)),  # type: ignore[call-overload]
        int(answer.get("projected", 0)),  # type: ignore[call-overload]
        int(answer.get("projection_errors", 0)),  # type: ignore[call-overload]
    )


async def sample_until(
    probe: HealthProbe, interval: float, stop: asyncio.Event, samples: list[Sample]
) -> None:
    """Append a sample to ``samples`` every ``interval`` seconds until ``stop`` is set."""
    due = time.perf_counter()
    while not stop.is_set():
        if (found := await _sample(probe)) is not None:
            samples.append(found)
        due += interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, due - time.perf_counter()))


async def catch_up(
    probe: HealthProbe, since: float, timeout: float, polls: list[Sample]
) -> float | None:
    """Seconds from ``since`` until ``/healthz`` shows ``projected >= position`` (None if not
    within ``timeout``); every poll is appended to ``polls``."""
    while time.perf_counter() - since < timeout:
        found = await _sample(probe)
        if found is not None:
            polls.append(found)
            if found.projected >= found.position:
                return found.at - since
        await asyncio.sleep(CATCH_UP_POLL_S)
    return None


def lag_seconds(during: Sequence[Sample], later: Sequence[Sample]) -> list[float]:
    """For each sample of ``during``: seconds until a sample (of ``during`` then ``later``)
    showed ``projected >= `` its ``position`` (inf if none did). Both only ever grow."""
    every = [*during, *later]
    seconds: list[float] = []
    reached = 0
    for index, sample in enumerate(during):
        reached = max(reached, index)
        while reached < len(every) and every[reached].projected < sample.position:
            reached += 1
        seconds.append(every[reached].at - sample.at if reached < len(every) else math.inf)
    return seconds


def summarise(
    during: Sequence[Sample], later: Sequence[Sample], caught_up_s: float | None, rate: float
) -> dict[str, Any]:
    """The lag figures of a run (JSON-ready: inf and unknown become None)."""
    events = sorted(max(0, s.position - s.projected) for s in during)
    seconds = sorted(lag_seconds(during, later))
    last: Sample | None = (later or during)[-1] if later or during else None

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "lag_samples": len(during),
        "lag_p99_events": percentile(events, 99) if events else None,
        "lag_max_events": events[-1] if events else None,
        "lag_p99_s": finite(percentile(seconds, 99)) if seconds else None,
        "lag_max_s": finite(seconds[-1]) if seconds else None,
        "lag_p99_s_by_rate": percentile(events, 99) / rate if events and rate > 0 else None,
        "catch_up_s": caught_up_s,
        "final_position": last.position if last else None,
        "final_projected": last.projected if last else None,
        "projection_errors": last.errors if last else None,
    }
