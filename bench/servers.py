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

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parent.parent
"""Where ``python -m bench.<module>`` works: every bench subprocess runs here."""
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_command(port: int, db_path: Path) -> list[str]:
    """``clerk-audit serve`` on ``port`` with the store ``db_path``, logging warnings only."""
    command = [str(BIN / "clerk-audit"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--db", str(db_path)]
    if _serve_has_log_level():
        command += ["--log-level", "warning"]
    return command


def _serve_has_log_level() -> bool:
    help_text = subprocess.run(
        [str(BIN / "clerk-audit"), "serve", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return "--log-level" in help_text


def baseline_command(app: str, port: int, db_path: Path) -> list[str]:
    """A baseline of :mod:`bench.baselines` on ``port``."""
    command = [sys.executable, "-m", "bench.baselines", app, "--port", str(port)]
    return [*command, "--db", str(db_path)]


@contextlib.contextmanager
def running(
    command: list[str], *, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The server ``command`` running (output to ``log``) for the block, then stopped."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=os.environ | env, stdout=output, stderr=subprocess.STDOUT, cwd=PROJECT
        )
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within :data:`STOP_TIMEOUT_S`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
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
