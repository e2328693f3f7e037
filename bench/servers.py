"""Starting and stopping the servers under test as subprocesses on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from eventstore.paths import default_projections_path

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parent.parent
"""Where ``python -m bench.<module>`` works: every bench subprocess runs here."""
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_command(port: int, db_path: Path, program: list[str] | None = None) -> list[str]:
    """``clerk-audit serve`` on ``port`` with the log ``db_path`` (the projections beside it),
    logging warnings only. ``program`` replaces ``clerk-audit`` (e.g. a profiler running
    ``-m eventstore.cli``)."""
    command = [*(program or [str(BIN / "clerk-audit")]), "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--db", str(db_path)]
    command += ["--log-level", "warning"]
    return command


def remove_store(db_path: Path) -> None:
    """Delete the log at ``db_path`` and its projections (the link and every generation file
    beside it), side files included: a projections file left from another log would hold a
    checkpoint past the new log's head."""
    projections = default_projections_path(db_path)
    generations = db_path.parent.glob(f"{projections.stem}.g*{projections.suffix}*")
    for path in [db_path, projections, *generations]:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def baseline_command(app: str, port: int, db_path: Path) -> list[str]:
    """A baseline of :mod:`bench.baselines` on ``port``."""
    command = [sys.executable, "-m", "bench.baselines", app, "--port", str(port)]
    return [*command, "--db", str(db_path)]


@contextlib.contextmanager
def running(
    command: list[str], *, env: dict[str, str], log: Path, stop_signal: int = signal.SIGTERM
) -> Iterator[subprocess.Popen[bytes]]:
    """The server ``command`` running (output to ``log``) for the block, then stopped."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=os.environ | env, stdout=output, stderr=subprocess.STDOUT, cwd=PROJECT
        )
        try:
            yield process
        finally:
            stop(process, stop_signal)


def stop(process: subprocess.Popen[bytes], stop_signal: int = signal.SIGTERM) -> None:
    """``stop_signal``, then SIGKILL if it has not exited within :data:`STOP_TIMEOUT_S`."""
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Block until ``GET /healthz`` answers 200.

    :raises RuntimeError: the process exited first, or ``timeout`` seconds passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        url = f"http://127.0.0.1:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:
            if answer.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"no 200 from GET /healthz on port {port} within {timeout:.0f} s")
