"""How much work a benchmark invocation does."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """The sizes of one invocation; the defaults are the quick profile for a 2-core machine
    (``make bench``, under 5 minutes once the log is cached)."""

    runs: int = 3
    """Runs of every figure (each reported by its median)."""
    ingest_seconds: float = 10.0
    connections: int = 32
    redeliveries: float = 0.2
    """The share of requests that re-send an earlier event."""
    log_events: int = 1_000_000
    """Events in the generated log that ``clerk-audit rebuild`` replays."""
    peer_events: int = 20_000
    """Events the eventsourcing peer appends and reads back, per run."""
    rebuild_timeout_s: float = 60.0
    """Past this a rebuild run is stopped (and counted as under 1/60 of the log per second)."""


QUICK = Profile()
