"""How much work a benchmark invocation does."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """The sizes of one invocation; the defaults are the quick profile for a 2-core machine
    (``make bench``: under 10 minutes once the 1M-event log is cached; the budgets below keep
    it there)."""

    runs: int = 3
    """Runs of every figure (each reported by its median)."""
    ingest_seconds: float = 10.0
    connections: int = 32
    redeliveries: float = 0.2
    """The share of requests that re-send an earlier event."""
    lag_sample_ms: float = 100.0
    """How often the load generator reads ``/healthz`` for the projections' lag."""
    catch_up_timeout_s: float = 30.0
    """The longest wait for the projections to catch up after a run (past it: a failure)."""
    log_events: int = 1_000_000
    """Events in the generated log that ``clerk-audit rebuild`` replays."""
    peer_events: int = 10_000
    """Events the eventsourcing peer appends and reads back, per run."""
    rebuild_timeout_s: float = 300.0
    """Past this a rebuild run is stopped (and counted as under the log ÷ this per second)."""
    rebuild_budget_s: float = 200.0
    """No new rebuild round starts when it would end past this, counting from the section's
    start (at least one round always runs: on 2 cores, one round of 110-160 s)."""
    transfer_budget_s: float = 150.0
    """The same for the rounds of export, import and feed over the 1M-event log (each moves
    the whole log three times: one round of about 95 s on 2 cores)."""
    disk_may_rebuild: bool = True
    """Whether the disk section may run a rebuild when the projections it measures are missing
    (not after the rebuild section's rebuild failed in the same invocation)."""
    profile_misses: bool = True
    """Whether to save pyinstrument profiles for the targets that fail."""
    profile_events: int = 100_000
    """Events of the log replayed under the profiler (rebuild: bulk; projector: live)."""


QUICK = Profile()


def another_round_fits(elapsed: float, rounds: int, budget: float) -> bool:
    """Whether a round after ``rounds`` rounds that took ``elapsed`` seconds in all would
    end within ``budget`` seconds, at their mean length (the first round always runs)."""
    return rounds == 0 or elapsed * (rounds + 1) / rounds <= budget
