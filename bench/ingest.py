"""The ingest benchmark: our server against the bare-HTTP ceiling and the naive design.

Each round runs the three systems one after the other (the order rotates between rounds), each
on a fresh store and port, with the same request stream and secret; ratios are taken within a
round. The load generator is a separate process (:mod:`bench.loadgen`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.deliveries import POOL_EVENTS, ensure_pool, new_secret
from bench.profile import Profile
from bench.servers import PROJECT, baseline_command, free_port, running, serve_command
from bench.stats import Section, ratio

BARE, NAIVE, OURS = "bare", "naive", "clerk-audit"
SYSTEMS = (BARE, NAIVE, OURS)
LOADGEN_GRACE_S = 90.0
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


def _command(system: str, port: int, db_path: Path) -> list[str]:
    if system == OURS:
        return serve_command(port, db_path)
    return baseline_command(system, port, db_path)


def _loadgen_command(plan: Plan, system: str, port: int, server_pid: int) -> list[str]:
    events = {BARE: 60_000, NAIVE: 80_000, OURS: plan.ours_events}[system]
    profile = plan.profile
    command = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--pool", str(plan.pool)]
    command += ["--events", str(events), "--redeliveries", str(profile.redeliveries)]
    command += ["--seconds", str(profile.ingest_seconds), "--connections", str(profile.connections)]
    command += ["--server-pid", str(server_pid)]
    return command + (["--wrap"] if system == BARE else [])


def _fresh(db_path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def run_one(plan: Plan, system: str, round_: int) -> Summary:
    """One load run against ``system``; the loadgen's summary, or ``{"error": ...}``."""
    folder = plan.work / "ingest"
    folder.mkdir(parents=True, exist_ok=True)
    db_path, port = folder / f"{system}.db", free_port()
    _fresh(db_path)
    env = {"CLERK_WEBHOOK_SIGNING_SECRET": plan.secret}
    log = folder / f"{system}-{round_}.log"
    try:
        with running(_command(system, port, db_path), env=env, log=log) as server:
            summary = _drive(_loadgen_command(plan, system, port, server.pid), env, server)
    finally:
        _fresh(db_path)
    if "error" in summary:
        summary["error"] += f" (server log: {log})"
    return summary


def _drive(command: list[str], env: dict[str, str], server: subprocess.Popen[bytes]) -> Summary:
    timeout = LOADGEN_GRACE_S
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


_FIGURES = (
    ("requests_per_s", "2xx answers per second", "req/s"),
    ("stored_per_s", "events stored per second", "events/s"),
    ("p50_ms", "latency p50", "ms"),
    ("p99_ms", "latency p99", "ms"),
    ("server_cpu", "server CPU busy (1.0 = one core)", "cores"),
    ("loadgen_cpu", "load generator CPU busy", "cores"),
)


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
    _record_ratios(section, results)


def _record_ratios(section: Section, results: dict[str, Summary]) -> None:
    ours = results.get(OURS, {})
    for baseline in (BARE, NAIVE):
        other = results.get(baseline, {})
        if "requests_per_s" in ours and "requests_per_s" in other:
            value = ratio(ours["requests_per_s"], other["requests_per_s"])
            key, label = f"ratio.{baseline}", f"{OURS} ÷ {baseline} (2xx answers per second)"
            section.figure(key, label, "x").add(value)
