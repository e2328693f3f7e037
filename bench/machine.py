"""What the results were measured on: the machine, the software, and how busy it was."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from eventstore.engine import sqlite3

PACKAGES = ("uvicorn", "uvloop", "httptools", "starlette", "svix", "orjson", "eventsourcing")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``unknown`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def git_revision(folder: Path) -> str:
    """The checked-out commit, with ``+changes`` if the tree differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True)
        return done.stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    return revision + (" +changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def describe(folder: Path) -> dict[str, str]:
    """The facts for the report's header, in display order."""
    facts = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "CPU": cpu_model(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "OS": f"{platform.system()} {platform.release()}",
        "commit": git_revision(folder),
        "load average at start": load_average(),
    }
    facts["packages"] = ", ".join(f"{name} {version(name)}" for name in PACKAGES)
    return facts
