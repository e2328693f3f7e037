"""``python -m bench`` (``make bench``): run the benchmarks and write ``bench/RESULTS.md``.

Progress goes to stderr. ``--only`` runs some sections (the others are reported as not run);
the other options change the quick profile, for development. The parts that miss a target
are then profiled (``bench/profiles/``, see ``bench/profiling.py``) unless ``--no-profiles``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.disk import run_disk
from bench.genlog import cached_log
from bench.ingest import run_ingest
from bench.integrity import run_integrity
from bench.machine import describe, load_average
from bench.peer import run_peer
from bench.postgres import run_postgres
from bench.profile import QUICK, Profile
from bench.profiling import profile_misses
from bench.rebuild import run_rebuild
from bench.report import render
from bench.stats import Section
from bench.targets import evaluate

HERE = Path(__file__).parent
RUNNERS: dict[str, Callable[[Profile, Path], Section]] = {
    "ingest": run_ingest,
    "rebuild": run_rebuild,
    "disk": run_disk,
    "peer": run_peer,
    "integrity": run_integrity,
    "postgres": run_postgres,
}
TITLES = {
    "ingest": "Ingest", "rebuild": "Rebuild", "disk": "Disk", "peer": "Peer: eventsourcing",
    "integrity": "Integrity", "postgres": "PostgreSQL log",
}  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=list(RUNNERS), action="append", help="repeatable")
    parser.add_argument("--runs", type=int, default=QUICK.runs)
    parser.add_argument("--seconds", type=float, default=QUICK.ingest_seconds)
    parser.add_argument("--log-events", type=int, default=QUICK.log_events)
    parser.add_argument("--peer-events", type=int, default=QUICK.peer_events)
    parser.add_argument("--rebuild-timeout", type=float, default=QUICK.rebuild_timeout_s)
    parser.add_argument("--profile-events", type=int, default=QUICK.profile_events)
    parser.add_argument("--no-profiles", action="store_true", help="profile no misses")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="caches, scratch")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    return parser.parse_args()


def _profile(args: argparse.Namespace) -> Profile:
    return dataclasses.replace(
        QUICK,
        runs=args.runs,
        ingest_seconds=args.seconds,
        log_events=args.log_events,
        peer_events=args.peer_events,
        rebuild_timeout_s=args.rebuild_timeout,
        profile_events=args.profile_events,
        profile_misses=not args.no_profiles,
    )


def _run(name: str, profile: Profile, work: Path) -> Section:
    """Run one section; a crash becomes a note instead of losing the other sections."""
    started = time.monotonic()
    print(f"{name}:", file=sys.stderr)
    try:
        section = RUNNERS[name](profile, work)
    except Exception as error:  # reported in RESULTS.md, traceback on stderr
        traceback.print_exc()
        section = Section(TITLES[name], notes=[f"the {name} benchmark failed: {error!r}"])
    print(f"{name}: done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return section


def main() -> None:
    args = _arguments()
    profile, started = _profile(args), time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    machine = describe(HERE.parent)
    sections: dict[str, Section] = {}
    for name in [name for name in RUNNERS if name in (args.only or RUNNERS)]:
        sections[name] = _run(name, profile, args.work)
        if name == "rebuild" and "rebuild.events_per_s" not in sections[name].figures:
            profile = dataclasses.replace(profile, disk_may_rebuild=False)
    targets = evaluate(sections)
    if profile.profile_misses:
        log = cached_log(args.work, profile.log_events)
        sections["profiles"] = profile_misses(targets, set(sections), log, profile, args.work)
    machine["load average at end"] = load_average()
    machine["total wall time"] = f"{time.monotonic() - started:.0f} s"
    method = (HERE / "method.md").read_text() + (HERE / "analysis.md").read_text()
    args.output.write_text(render(machine, profile, sections, targets, method))
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
