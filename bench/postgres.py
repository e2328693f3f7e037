"""The PostgreSQL log's benchmark (``python -m bench --only postgres``).

On one PostgreSQL 15 server started for the run (durable: ``fsync`` on, as in production),
each round runs, on a fresh database and with the same request stream, the naive design on
PostgreSQL (one commit per request, ``bench.baselines naive-pg``), one ``clerk-audit serve``
and two of them on one log, each loaded at :data:`Profile.connections` connections in all by
``bench.loadgen`` (the two-server run splits them, with disjoint events). It records rates,
p99, and where the CPU went: our servers, PostgreSQL (the postmaster and its backends), the
load generators. Then the projector follows a PostgreSQL log filled with events, against the
same events in a SQLite log in the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import psutil

from bench.deliveries import ensure_pool, load_pool, new_secret
from bench.measure import process_family
from bench.profile import Profile
from bench.servers import BIN, PROJECT, free_port, running
from bench.stats import Section, ratio
from eventstore.backends import log_transaction, open_log
from eventstore.location import LogLocation, PostgresLog
from eventstore.pg.connect import prepare
from eventstore.writer import AppendJob, append_jobs
from projections.projector import Projector
from tests.support.postgres import PostgresServer, running_postgres

NAIVE, ONE, TWO = "naive-pg", "clerk-audit x1", "clerk-audit x2"
SYSTEMS = (NAIVE, ONE, TWO)
EVENTS_OFFERED = 60_000
"""Unique events per load generator (more than a 10 s run on 2 cores can store)."""
PROJECTOR_EVENTS = 50_000
MAKE_BENCH_RUNS = 1
"""Rounds in ``make bench``: one (about 7 minutes on 2 cores); the ratios are taken within it.
``python -m bench.postgres RUNS`` runs more."""
LOADGEN_GRACE_S = 120.0
Summary = dict[str, Any]


def _cpu(pid: int) -> float:
    try:
        return sum(t.user + t.system for t in (p.cpu_times() for p in process_family(pid)))
    except psutil.Error:
        return float("nan")


def _server_command(system: str, port: int, log: PostgresLog) -> list[str]:
    if system == NAIVE:
        return [sys.executable, "-m", "bench.baselines", "naive-pg", "--port", str(port),
                "--db", log.url]  # fmt: skip
    return [str(BIN / "clerk-audit"), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--db", log.url, "--log-level", "warning", "--no-projector"]  # fmt: skip


def _loadgen(port: int, pool: Path, connections: int, skip: int, profile: Profile,
             pid: int) -> list[str]:  # fmt: skip
    return [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--pool", str(pool),
            "--events", str(EVENTS_OFFERED), "--skip", str(skip), "--redeliveries",
            str(profile.redeliveries), "--seconds", str(profile.ingest_seconds),
            "--connections", str(connections), "--server-pid", str(pid)]  # fmt: skip


def _run(system: str, pg: PostgresServer, pool: Path, secret: str, profile: Profile,
         folder: Path) -> Summary:  # fmt: skip
    """One load run of ``system`` on a new database: the merged summary of its loadgens."""
    log, servers = pg.new_database(), 2 if system == TWO else 1
    if system != NAIVE:
        prepare(log)
    env = {"CLERK_WEBHOOK_SIGNING_SECRET": secret,
           "CLERK_AUDIT_PROJECTIONS_DB": str(folder / "unused.projections.db")}  # fmt: skip
    ports = [free_port() for _ in range(servers)]
    per = profile.connections // servers
    with ExitStack() as stack:
        procs = [stack.enter_context(running(_server_command(system, port, log), env=env,
                                             log=folder / f"{system}-{n}.log"))
                 for n, port in enumerate(ports)]  # fmt: skip
        pg_cpu, started = _cpu(pg.pid()), time.perf_counter()
        loads = [subprocess.Popen(_loadgen(port, pool, per, n * EVENTS_OFFERED, profile, p.pid),
                                  env=os.environ | env, cwd=PROJECT, stdout=subprocess.PIPE,
                                  text=True)
                 for n, (port, p) in enumerate(zip(ports, procs, strict=True))]  # fmt: skip
        outputs = [load.communicate(timeout=LOADGEN_GRACE_S + profile.ingest_seconds)[0]
                   for load in loads]  # fmt: skip
        pg_seconds = _cpu(pg.pid()) - pg_cpu
    if any(load.returncode for load in loads):
        return {"error": f"a load generator failed ({[load.returncode for load in loads]})"}
    results = [json.loads(out) for out in outputs]
    return _merge(results, pg_seconds, time.perf_counter() - started)


def _merge(results: list[Summary], pg_cpu_s: float, wall_s: float) -> Summary:
    seconds = max(r["seconds"] for r in results)
    return {
        "requests_per_s": sum(r["requests_per_s"] for r in results),
        "stored_per_s": sum(r["stored_per_s"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "failures": sum(sum(r["non_2xx"].values()) + sum(r["errors"].values()) for r in results),
        "server_cpu": sum(r["server_cpu"] for r in results),
        "loadgen_cpu": sum(r["loadgen_cpu"] for r in results),
        "postgres_cpu": pg_cpu_s / seconds,
        "postgres_cpu_note": f"over the {wall_s:.0f} s the load generators ran",
    }


_FIGURES = (
    ("requests_per_s", "2xx answers per second", "req/s"),
    ("stored_per_s", "events stored per second", "events/s"),
    ("p50_ms", "latency p50 (the larger of the load generators')", "ms"),
    ("p99_ms", "latency p99 (the larger of the load generators')", "ms"),
    ("failures", "non-2xx + errors", "count"),
    ("server_cpu", "ingest server(s) CPU busy (1.0 = one core)", "cores"),
    ("postgres_cpu", "PostgreSQL CPU busy (postmaster and backends, whole loadgen run)", "cores"),
    ("loadgen_cpu", "load generator(s) CPU busy", "cores"),
)


def _record(section: Section, system: str, summary: Summary) -> None:
    if "error" in summary:
        section.notes.append(f"{system}: {summary['error']}")
        return
    for key, label, unit in _FIGURES:
        section.figure(f"pg.{system}.{key}", f"{system}: {label}", unit).add(summary[key])


def _fill(log: LogLocation, events: list[tuple[str, bytes]]) -> None:
    """Append ``events`` as the writer does, 2,000 to a transaction."""
    with closing(open_log(log)) as conn:
        for start in range(0, len(events), 2_000):
            jobs = [AppendJob(event_id, 1, "2026-01-01T00:00:00.000Z", body)
                    for event_id, body in events[start : start + 2_000]]  # fmt: skip
            with log_transaction(conn, log):
                append_jobs(conn, jobs)


def _follow(log: LogLocation, projections: Path) -> float:
    """Events per second of the projector applying the whole log to new projections."""
    projector = Projector(log, projections)
    try:
        started = time.perf_counter()
        handled = projector.run()
        return handled / (time.perf_counter() - started)
    finally:
        projector.close()


def _projector(section: Section, pg: PostgresServer, pool: Path, folder: Path) -> None:
    events = load_pool(pool, PROJECTOR_EVENTS)
    pg_log, sqlite_log = pg.new_database(), folder / "follow.db"
    sqlite_log.unlink(missing_ok=True)
    _fill(pg_log, events)
    _fill(sqlite_log, events)
    rates = {}
    for name, log in (("postgresql", pg_log), ("sqlite", sqlite_log)):
        projections = folder / f"follow-{name}.projections.db"
        for stale in folder.glob(f"follow-{name}.projections*"):
            stale.unlink()
        rates[name] = _follow(log, projections)
        label = f"projector following a {name} log ({len(events):,} events)"
        section.figure(f"pg.projector.{name}", label, "events/s").add(rates[name])
    section.figure("pg.projector.ratio", "projector: PostgreSQL log ÷ SQLite log", "x").add(
        ratio(rates["postgresql"], rates["sqlite"])
    )


def run_postgres(
    profile: Profile, work: Path, durable: bool = True, runs: int = MAKE_BENCH_RUNS
) -> Section:
    """Every round of the ingest comparison, then the projector's rate. ``durable=False``
    (``python -m bench.postgres RUNS SECONDS no-fsync``, never ``make bench``) runs the
    server without fsync: what each design costs in CPU when the disk is out of the way."""
    section = Section("PostgreSQL log" if durable else "PostgreSQL log, no fsync")
    folder = work / "postgres"
    folder.mkdir(parents=True, exist_ok=True)
    pool, secret = ensure_pool(work), new_secret()
    with running_postgres(durable=durable) as pg:
        for round_ in range(runs):
            results: dict[str, Summary] = {}
            for system in SYSTEMS[round_ % 3 :] + SYSTEMS[: round_ % 3]:
                print(f"  postgres: round {round_ + 1}/{runs}: {system}", file=sys.stderr)
                results[system] = _run(system, pg, pool, secret, profile, folder)
                print(f"    {system}: {results[system]}", file=sys.stderr)
                _record(section, system, results[system])
            for ours in (ONE, TWO):
                if "requests_per_s" in results[ours] and "requests_per_s" in results[NAIVE]:
                    section.figure(f"pg.ratio.{ours}", f"{ours} ÷ naive-pg (2xx per second)",
                                   "x").add(ratio(results[ours]["requests_per_s"],
                                                  results[NAIVE]["requests_per_s"]))  # fmt: skip
        _projector(section, pg, pool, folder)
    return section


def main() -> None:
    """``python -m bench.postgres [RUNS] [SECONDS] [no-fsync]``: this section alone, printed
    as JSON."""
    import dataclasses

    from bench.profile import QUICK

    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else QUICK.ingest_seconds
    profile = dataclasses.replace(QUICK, runs=runs, ingest_seconds=seconds)
    durable = not (len(sys.argv) > 3 and sys.argv[3] == "no-fsync")
    section = run_postgres(profile, Path(__file__).parent / "work", durable, runs)
    print(json.dumps({k: (f.label, f.unit, f.runs) for k, f in section.figures.items()},
                     indent=1, ensure_ascii=False))  # fmt: skip
    for note in section.notes:
        print(note)


if __name__ == "__main__":
    main()
