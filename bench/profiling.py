"""Profiles (pyinstrument) of what misses its target, saved in ``bench/profiles/``.

After the targets are evaluated, each failing target names the part of the system it measures,
and that part is run once more under pyinstrument (a sampling profiler: wall-clock time of the
main thread, 1 ms interval):

* **ingest** (throughput, p99, against eventsourcing): one ingest run of ``clerk-audit serve``
  (the same load as a round) with the server process under the profiler (the event loop and
  uvicorn; the writer thread's time shows only where the loop waits for it; the projector is a
  process of its own, profiled below);
* **projector** (catch-up): the live projector (``projections.Projector``) applying the first
  ``profile_events`` events of the generated log to an empty projections file, in batches as
  in the server;
* **rebuild** (events/s, memory, against the ceiling and eventsourcing): the bulk build
  (``projections.bulk.build``) of the first ``profile_events`` events of the generated log,
  in one process (``workers=0``), so that parsing, folding and writing all show in one profile.

Each is saved as a call tree (``<kind>.txt``) and, for the report, a flat list of the functions
with the most time of their own. The disk target has no profile: it is not a matter of time.
"""

from __future__ import annotations

import argparse
import gc
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

from bench.profile import Profile
from bench.stats import Section
from bench.targets import Target

HERE = Path(__file__).parent
PROFILES = HERE / "profiles"
INTERVAL_S = 0.001
_TIMED = re.compile(r"\s*\d+\.\d+ ")
"""A line of the flat list (``1.234 function  file:line``), not of its banner."""
FLAT_LINES = 14

KINDS = {
    "ingest": ("ingest", "the ingest server under load"),
    "projector": ("ingest", "the live projector applying the log"),
    "rebuild": ("rebuild", "the bulk rebuild in one process"),
}
"""Each profile: the section whose targets it explains, and what it shows."""


def kind_of(target: Target) -> str | None:
    """Which profile explains a miss of ``target`` (None: no profile does)."""
    label = target.label
    if label.startswith("projections catch up"):
        return "projector"
    if label.startswith("ingest"):
        return "ingest"
    if label.startswith("rebuild"):
        return "rebuild"
    return None


def _renders(session: Session) -> tuple[str, str]:
    tree = ConsoleRenderer(unicode=True, color=False, show_all=False).render(session)
    flat = ConsoleRenderer(unicode=True, color=False, flat=True).render(session)
    return tree, flat


def save(kind: str, session: Session, about: str) -> list[str]:
    """Write ``bench/profiles/<kind>.txt``; the flat list's first lines, for the report."""
    tree, flat = _renders(session)
    PROFILES.mkdir(exist_ok=True)
    (PROFILES / f"{kind}.txt").write_text(
        f"{about}\n\nFunctions by their own time:\n{flat}\n\nCall tree:\n{tree}"
    )
    lines = [line.strip() for line in flat.splitlines() if _TIMED.match(line)]
    return lines[:FLAT_LINES]


def _profiled(run: Callable[[], object]) -> Session:
    gc.disable()
    profiler = Profiler(interval=INTERVAL_S)
    profiler.start()
    try:
        run()
    finally:
        profiler.stop()
    assert profiler.last_session is not None
    return profiler.last_session


def profile_rebuild(log: Path, events: int) -> tuple[Session, str]:
    from projections.bulk import build

    with tempfile.TemporaryDirectory(dir=log.parent) as folder:
        started = time.perf_counter()
        session = _profiled(lambda: build(log, Path(folder) / "p.db", events, None, 0))
        seconds = time.perf_counter() - started
    about = (f"projections.bulk.build of the first {events:,} events of {log.name}, "
             f"workers=0, under pyinstrument: {seconds:.1f} s ({events / seconds:,.0f} events/s "
             "with the profiler's overhead)")  # fmt: skip
    return session, about


def profile_projector(log: Path, events: int) -> tuple[Session, str]:
    from projections.projector import Projector

    with tempfile.TemporaryDirectory(dir=log.parent) as folder:
        projector = Projector(log, Path(folder) / "p.db")
        started = time.perf_counter()
        try:
            session = _profiled(lambda: projector.run(events))
        finally:
            projector.close()
        seconds = time.perf_counter() - started
    about = (f"projections.Projector.run over the first {events:,} events of {log.name} into "
             f"an empty projections file, under pyinstrument: {seconds:.1f} s "
             f"({events / seconds:,.0f} events/s with the profiler's overhead)")  # fmt: skip
    return session, about


def _in_process(kind: str, log: Path, events: int, work: Path) -> list[str]:
    """Run ``python -m bench.profiling KIND`` (a fresh process) and read what it saved."""
    out = work / "profiles" / f"{kind}.pyisession"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench.profiling", kind, str(log), str(events), str(out)]
    done = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return [f"profiling {kind} failed: {done.stderr.strip().splitlines()[-1:]}"]
    about = done.stdout.strip()
    return save(kind, Session.load(str(out)), about)


def _ingest(work: Path, profile: Profile) -> list[str]:
    """One ingest run with the server under pyinstrument's command line."""
    from bench.deliveries import ensure_pool, new_secret
    from bench.ingest import OURS, Plan, run_one

    out = work / "profiles" / "ingest.pyisession"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    wrapper = [sys.executable, "-m", "bench.profiled", str(out)]
    plan = Plan(profile, work, ensure_pool(work), new_secret())
    plan.ours_events = 60_000
    summary = run_one(plan, OURS, 0, wrapper=wrapper, tag="profile")
    if "error" in summary or not out.exists():
        return [f"profiling ingest failed: {summary.get('error', 'no profile was written')}"]
    about = (
        "clerk-audit serve under pyinstrument (bench/profiled.py), one ingest run: "
        f"{summary['requests_per_s']:,.0f} req/s, p99 {summary['p99_ms']:.1f} ms (with the "
        "profiler's overhead). The main thread only (the event loop), from start-up (imports "
        "excluded) to the stop; the time the loop waits (for requests, for the writer's "
        "commits, before and after the load) shows as the loop's own time"
    )
    return save("ingest", Session.load(str(out)), about)


def profile_misses(
    targets: list[Target], ran: set[str], log: Path | None, profile: Profile, work: Path
) -> Section:
    """Profile each part whose target failed (and whose section ran), in ``bench/profiles/``.

    Profiles of parts that ran and now pass are deleted, so none is left that is stale.
    """
    section = Section("Profiles")
    wanted = {k for t in targets if t.verdict == "FAIL" and (k := kind_of(t)) is not None}
    for kind, (source, about) in KINDS.items():
        if source not in ran:
            continue
        (PROFILES / f"{kind}.txt").unlink(missing_ok=True)
        if kind not in wanted:
            continue
        print(f"  profiles: {kind} ({about})", file=sys.stderr)
        events = profile.profile_events
        if kind == "ingest":
            lines = _ingest(work, profile)
        elif log is None:
            lines = [f"no {kind} profile: no generated log in this invocation"]
        else:
            lines = _in_process(kind, log, min(events, _head(log)), work)
        section.notes.append(
            f"`bench/profiles/{kind}.txt` ({about}); functions by own time:\n\n    "
            + "\n    ".join(lines)
            + "\n"
        )
    return section


def _head(log: Path) -> int:
    from eventstore.engine import sqlite3

    conn = sqlite3.connect(f"{log.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiling")
    parser.add_argument("kind", choices=["rebuild", "projector"])
    parser.add_argument("log", type=Path)
    parser.add_argument("events", type=int)
    parser.add_argument("out", type=Path, help="where to save the pyinstrument session")
    args = parser.parse_args()
    run = profile_rebuild if args.kind == "rebuild" else profile_projector
    session, about = run(args.log, args.events)
    session.save(str(args.out))
    print(about)


if __name__ == "__main__":
    main()
