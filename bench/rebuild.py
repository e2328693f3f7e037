"""The rebuild benchmark: ``clerk-audit rebuild`` on a generated log, against the parsing ceiling.

Both commands run in a fresh process under :mod:`bench.measure` (wall time of the whole
command, start-up included, and peak RSS of all its processes), alternating which goes
first. Both read the cached log in place: a rebuild only reads the log and builds a new
generation of the projections file beside it (``<log>.projections.g<N>.db``), which replaces
the one the previous round built; the scan reads only ``events``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.genlog import ensure_log
from bench.profile import Profile, another_round_fits
from bench.servers import BIN, PROJECT
from bench.stats import Section, ratio
from eventstore.paths import default_projections_path

Measured = dict[str, Any]


def measure(command: list[str], timeout: float) -> Measured:
    """Wall time, peak RSS and output of ``command`` (see :mod:`bench.measure`)."""
    runner = [sys.executable, "-m", "bench.measure", str(timeout), "--", *command]
    done = subprocess.run(runner, cwd=PROJECT, capture_output=True, text=True, check=True)
    measured: Measured = json.loads(done.stdout)
    return measured


def remove_stopped_generations(log: Path) -> None:
    """Delete the projections generations of ``log`` that its link does not lead to, with their
    side and part files: a rebuild stopped at the time limit leaves what it was building (the
    next rebuild builds the generation after it and never deletes it)."""
    link = default_projections_path(log)
    current = link.resolve().name if link.exists() else None
    for file in log.parent.glob(f"{link.stem}.g*"):
        if current is None or not file.name.startswith(current):
            file.unlink(missing_ok=True)


def _rebuild(log: Path, profile: Profile) -> Measured:
    remove_stopped_generations(log)
    return measure(
        [str(BIN / "clerk-audit"), "rebuild", "--db", str(log)], profile.rebuild_timeout_s
    )


def _scan(log: Path, profile: Profile) -> Measured:
    return measure([sys.executable, "-m", "bench.scan", str(log)], profile.rebuild_timeout_s)


def _failure(name: str, measured: Measured, events: int) -> str | None:
    if measured["returncode"] == 0:
        return None
    if measured["returncode"] is None:
        return (
            f"{name} did not finish within {measured['seconds']:.0f} s, so it ran at under "
            f"{events / measured['seconds']:,.0f} events/s (peak RSS until it was stopped: "
            f"{measured['peak_rss_mb']:,.0f} MB)"
        )
    last = (measured["stderr"].strip() or measured["stdout"].strip()).splitlines()[-1:]
    return f"{name} exited with status {measured['returncode']}: {' '.join(last)}"


def _counted(output: str, events: int) -> bool:
    """Whether ``output`` mentions the event count (``1000000`` or ``1,000,000``)."""
    numbers = {int(n.replace(",", "").replace("_", "")) for n in re.findall(r"\d[\d,_]*", output)}
    return events in numbers


def run_rebuild(profile: Profile, work: Path) -> Section:
    """Rounds of (scan, rebuild), alternating which goes first, within the time budget."""
    section = Section("Rebuild")
    log = ensure_log(work, profile.log_events)
    steps = {"rebuild": _rebuild, "scan": _scan}
    started = time.monotonic()
    for round_ in range(profile.runs):
        elapsed = time.monotonic() - started
        if not another_round_fits(elapsed, round_, profile.rebuild_budget_s):
            section.notes.append(
                f"{round_} of {profile.runs} rounds: another would have taken the section past "
                f"its {profile.rebuild_budget_s:.0f} s budget"
            )
            break
        print(f"  rebuild: round {round_ + 1}/{profile.runs}", file=sys.stderr)
        order = list(steps)[:: 1 if round_ % 2 == 0 else -1]
        results = {name: steps[name](log, profile) for name in order}
        if not _record(section, profile.log_events, results):
            break
    return section


def _record(section: Section, events: int, results: dict[str, Measured]) -> bool:
    """Add a round's figures; False if a command failed (the next rounds would too)."""
    failures = [f for name, m in results.items() if (f := _failure(name, m, events))]
    section.notes += failures
    for name, measured in results.items():
        if _failure(name, measured, events) is None:
            _add(section, name, events, measured)
    if not failures:
        scan, rebuild = results["scan"]["seconds"], results["rebuild"]["seconds"]
        section.figure("ratio.scan", "rebuild ÷ parsing ceiling (events/s)", "x").add(
            ratio(scan, rebuild)
        )
        _check_output(section, events, results["rebuild"]["stdout"])
    return not failures


def _add(section: Section, name: str, events: int, measured: Measured) -> None:
    label = {"scan": "parsing ceiling (scan + orjson)", "rebuild": "clerk-audit rebuild"}[name]
    rate = events / measured["seconds"]
    section.figure(f"{name}.events_per_s", f"{label}: events per second", "events/s").add(rate)
    section.figure(f"{name}.seconds", f"{label}: wall time", "s").add(measured["seconds"])
    section.figure(f"{name}.peak_rss_mb", f"{label}: peak RSS, all processes", "MB").add(
        measured["peak_rss_mb"]
    )
    section.figure(f"{name}.largest_rss_mb", f"{label}: peak RSS, largest process", "MB").add(
        measured["largest_process_rss_mb"]
    )
    print(f"    {name}: {rate:,.0f} events/s, peak RSS {measured['peak_rss_mb']:,.0f} MB",
          file=sys.stderr)  # fmt: skip


def _check_output(section: Section, events: int, output: str) -> None:
    """Quote the first rebuild's output once, and say if it does not show the event count."""
    if any(note.startswith("rebuild output") for note in section.notes):
        return
    note = "rebuild output (first run): " + " | ".join(output.strip().splitlines()[:3])
    if not _counted(output, events):
        note += f" (the event count {events:,} is not in it)"
    section.notes.append(note)
