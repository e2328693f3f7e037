"""Start-up failures of ``clerk-audit serve``: run several at once (each costs a second of
imports), then check each printed one clear line."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Run:
    """One command to run, with its environment."""

    command: Sequence[str]
    env: Mapping[str, str]


def run_all(runs: Mapping[str, Run]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Start every run at once and wait for each (a run still going after the timeout, say a
    server that started when it should have failed, is killed and reported as it was)."""
    started = {
        name: subprocess.Popen(
            run.command,
            env=dict(run.env),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, run in runs.items()
    }
    done = {}
    for name, process in started.items():
        with process:
            try:
                out, err = process.communicate(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``clerk-audit: error:`` line a failed start printed (asserting that is all)."""
    assert done.returncode not in (0, None), done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("clerk-audit: error: ")
    return lines[0]
