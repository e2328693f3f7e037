"""The ingest benchmark: our server against the bare-HTTP ceiling and the naive design.

Each round runs the three systems one after the other (the order rotates between rounds), each
on a fresh store and port, with the same request stream and secret; ratios are taken within a
round. The load generator is a separate process (:mod:`bench.loadgen`). Against our server
it also samples the projections' lag from ``/healthz`` and waits for them to catch up after the
load (:mod:`bench.lag`); once the server has stopped, the log it wrote is measured on disk.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.deliveries import POOL_EVENTS, ensure_pool, new_secret
from bench.disk import checkpoint, log_usage
from bench.profile import Profile
from bench.servers import PROJECT, baseline_command, free_port, remove_store, running, serve_command
from bench.stats import Section, ratio

BARE, NAIVE, OURS = "bare", "naive", "clerk-audit"
SYSTEMS = (BARE, NAIVE, OURS)
LOADGEN_GRACE_S = 90.0
"""How long the load generator may take beyond the run and the catch-up: loading and
signing its requests, waiting for the server."""
Summary = dict[str, Any]


@dataclass(slots=True)
class Plan:
    """What a round needs: where things go, the secret, and the pool of events."""

    profile: Profile
    work: Path
    pool: Path
    secret: str
    ours_events: int = 150_000
    """Unique events offered to our server, sized from the rates seen (see :func:`_size`)."""
    ours_sized: bool = False
    """Whether ``ours_events`` comes from a run of our own server (else from the ceiling)."""
    feed_token: str | None = None
    """``CLERK_AUDIT_FEED_TOKEN`` for our server (and the load generator's feed readers)."""
    feed_readers: int = 0
    """Readers following ``GET /events`` during the load (``bench.feedreaders``)."""


def _command(system: str, port: int, db_path: Path, wrapper: list[str] | None) -> list[str]:
    if system == OURS:
        return serve_command(port, db_path, wrapper)
    return baseline_command(system, port, db_path)


def _loadgen_command(plan: Plan, system: str, port: int, server_pid: int) -> list[str]:
    events = {BARE: 60_000, NAIVE: 80_000, OURS: plan.ours_events}[system]
    profile = plan.profile
    command = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--pool", str(plan.pool)]
    command += ["--events", str(events), "--redeliveries", str(profile.redeliveries)]
    command += ["--seconds", str(profile.ingest_seconds), "--connections", str(profile.connections)]
    command += ["--server-pid", str(server_pid)]
    if system == OURS:
        command += ["--feed-readers", str(plan.feed_readers)]
        command += ["--sample-ms", str(profile.lag_sample_ms)]
        command += ["--catch-up-timeout", str(profile.catch_up_timeout_s)]
    return command + (["--wrap"] if system == BARE else [])


def run_one(
    plan: Plan, system: str, round_: int, wrapper: list[str] | None = None, tag: str = ""
) -> Summary:
    """One load run against ``system`` (its command prefixed by ``wrapper``, e.g. a profiler);
    the loadgen's summary, with the log's size on disk for our server, or ``{"error": ...}``."""
    folder = plan.work / "ingest"
    folder.mkdir(parents=True, exist_ok=True)
    db_path, port = folder / f"{system}.db", free_port()
    remove_store(db_path)
    env = {"CLERK_WEBHOOK_SIGNING_SECRET": plan.secret}
    if plan.feed_token is not None:
        env["CLERK_AUDIT_FEED_TOKEN"] = plan.feed_token
    log = folder / f"{system}-{tag or round_}.log"
    timeout = LOADGEN_GRACE_S + plan.profile.ingest_seconds + plan.profile.catch_up_timeout_s
    try:
        command = _command(system, port, db_path, wrapper)
        # A profiler writes its profile when the program ends by itself: uvicorn re-raises
        # the signal that stopped it, which SIGTERM's default action ends at once, while
        # SIGINT's becomes KeyboardInterrupt and lets the profiler finish.
        stop_signal = signal.SIGINT if wrapper else signal.SIGTERM
        with running(command, env=env, log=log, stop_signal=stop_signal) as server:
            summary = _drive(_loadgen_command(plan, system, port, server.pid), env, server, timeout)
        if system == OURS and "error" not in summary:
            checkpoint(db_path)
            summary["disk"] = log_usage(db_path)
    finally:
        remove_store(db_path)
    if "error" in summary:
        summary["error"] += f" (server log: {log})"
    return summary


def _drive(
    command: list[str], env: dict[str, str], server: subprocess.Popen[bytes], timeout: float
) -> Summary:
    done = subprocess.run(
        command,
        env=os.environ | env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if server.poll() is not None:
        return {"error": f"the server exited with status {server.returncode} during the run"}
    if done.returncode != 0:
        return {"error": f"load generator failed: {done.stderr.strip().splitlines()[-1:]}"}
    summary: Summary = json.loads(done.stdout)
    return summary


def _size(plan: Plan, system: str, summary: Summary) -> None:
    """Offer our server just enough unique events for a full run (signing them all takes
    time): 1.5x the most it stored so far, or, before its first run, 1.2x the HTTP ceiling.
    If it still runs out, the run ends early and says so; its rates stay valid."""
    seconds, new_share = plan.profile.ingest_seconds, 1 - plan.profile.redeliveries
    if system == OURS and "stored_per_s" in summary:
        needed = int(summary["stored_per_s"] * seconds * 1.5)
        plan.ours_events = needed if not plan.ours_sized else max(plan.ours_events, needed)
        plan.ours_sized = True
    elif system == BARE and "requests_per_s" in summary and not plan.ours_sized:
        plan.ours_events = int(summary["requests_per_s"] * new_share * seconds * 1.2)
    plan.ours_events = min(POOL_EVENTS, max(20_000, plan.ours_events))


def _order(round_: int) -> list[str]:
    shift = round_ % len(SYSTEMS)
    return list(SYSTEMS[shift:] + SYSTEMS[:shift])


def run_ingest(profile: Profile, work: Path) -> Section:
    """All rounds; the figures of every system and the within-round ratios."""
    plan = Plan(profile, work, ensure_pool(work), new_secret())
    section = Section("Ingest")
    for round_ in range(profile.runs):
        results: dict[str, Summary] = {}
        for system in _order(round_):
            print(f"  ingest: round {round_ + 1}/{profile.runs}: {system}", file=sys.stderr)
            results[system] = run_one(plan, system, round_)
            _say(system, results[system])
            _size(plan, system, results[system])
        _record(section, results)
    return section


def _say(system: str, summary: Summary) -> None:
    if "error" in summary:
        print(f"    {system}: {summary['error']}", file=sys.stderr)
        return
    print(
        f"    {system}: {summary['requests_per_s']:,.0f} req/s, "
        f"{summary['stored_per_s']:,.0f} stored/s, p99 {summary['p99_ms']:.1f} ms, "
        f"non-2xx {sum(summary['non_2xx'].values())}, server CPU {summary['server_cpu']:.0%}, "
        f"loadgen CPU {summary['loadgen_cpu']:.0%} (requests built in {summary['build_s']:.1f} s)",
        file=sys.stderr,
    )
    if "lag_samples" in summary:
        print(
            f"    {system}: projections lag p99 {summary['lag_p99_events']} events / "
            f"{_seconds_text(summary['lag_p99_s'])}, caught up "
            f"{_seconds_text(summary['catch_up_s'])} after the load, projector CPU "
            f"{summary['server_projector_cpu']:.0%}",
            file=sys.stderr,
        )


def _seconds_text(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


_FIGURES = (
    ("requests_per_s", "2xx answers per second", "req/s"),
    ("stored_per_s", "events stored per second", "events/s"),
    ("p50_ms", "latency p50", "ms"),
    ("p99_ms", "latency p99", "ms"),
    ("server_cpu", "server CPU busy (1.0 = one core)", "cores"),
    ("loadgen_cpu", "load generator CPU busy", "cores"),
)
_OURS_FIGURES = (
    ("server_main_cpu", "server CPU busy, event loop's process (HTTP, verification)", "cores"),
    ("server_writer_cpu", "server CPU busy, the log's writer process", "cores"),
    ("server_projector_cpu", "server CPU busy, projector process", "cores"),
    ("lag_p99_events", "projections' lag p99, in events (position - projected)", "events"),
    ("lag_max_events", "projections' lag max, in events", "events"),
    ("lag_p99_s", "projections' lag p99, in seconds (until projected reached the position)",
     "s"),
    ("lag_p99_s_by_rate", "projections' lag p99, in events ÷ events stored per second", "s"),
)  # fmt: skip


def _record(section: Section, results: dict[str, Summary]) -> None:
    for system, summary in results.items():
        if "error" in summary:
            section.notes.append(f"{system}: {summary['error']}")
            continue
        for key, label, unit in _FIGURES:
            if system == BARE and key == "stored_per_s":
                continue
            section.figure(f"{system}.{key}", f"{system}: {label}", unit).add(summary[key])
        bad = sum(summary["non_2xx"].values()) + sum(summary["errors"].values())
        section.figure(f"{system}.failures", f"{system}: non-2xx + errors", "count").add(bad)
        if summary["exhausted"]:
            section.notes.append(f"{system}: ran out of unique events before the time was up")
        if system == OURS:
            _record_ours(section, summary)
    _record_ratios(section, results)


def _record_ours(section: Section, summary: Summary) -> None:
    """The projections' lag and catch-up, and the log's bytes on disk, of one run."""
    for key, label, unit in _OURS_FIGURES:
        if summary.get(key) is not None:
            section.figure(f"{OURS}.{key}", f"{OURS}: {label}", unit).add(summary[key])
        elif key.startswith("lag"):
            section.notes.append(
                f"{OURS}: no {key} in a run (samples: {summary.get('lag_samples')})"
            )
    caught_up = summary.get("catch_up_s")
    label = f"{OURS}: catch-up after the load (until projected == position)"
    section.figure(f"{OURS}.catch_up_s", label, "s").add(
        math.inf if caught_up is None else caught_up
    )
    if caught_up is None:
        section.notes.append(
            f"{OURS}: the projections did not catch up with the log within the wait "
            f"(projected {summary.get('final_projected')} of {summary.get('final_position')})"
        )
    if summary.get("projection_errors"):
        section.notes.append(f"{OURS}: {summary['projection_errors']} projection errors")
    disk = summary.get("disk")
    if disk and disk["events"]:
        per_event = section.figure(
            f"{OURS}.log_bytes_per_event",
            f"{OURS}: log on disk per stored event (events + deliveries + indexes)", "bytes",
        )  # fmt: skip
        per_event.add(disk["file_bytes"] / disk["events"])
        section.figure(
            f"{OURS}.log_per_body_byte", f"{OURS}: log on disk ÷ body bytes stored", "x"
        ).add(ratio(disk["file_bytes"], disk["body_bytes"]))


def _record_ratios(section: Section, results: dict[str, Summary]) -> None:
    ours = results.get(OURS, {})
    for baseline in (BARE, NAIVE):
        other = results.get(baseline, {})
        if "requests_per_s" in ours and "requests_per_s" in other:
            value = ratio(ours["requests_per_s"], other["requests_per_s"])
            key, label = f"ratio.{baseline}", f"{OURS} ÷ {baseline} (2xx answers per second)"
            section.figure(key, label, "x").add(value)
