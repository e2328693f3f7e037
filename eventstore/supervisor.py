"""The projector as a child of the server: started with it, restarted if it dies, stopped
with it.

It runs ``clerk-audit project --follow`` in a process of its own (a second core, and no share
of the ingest's GIL); ingest never waits for it. If it exits while the server runs (a crash,
SIGKILL, out of memory), it is started again after a pause that grows with repeated failures.
It also stops by itself if the server dies without stopping it (``--parent``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from eventstore.location import DB_ENV, LogLocation, location_text

log = logging.getLogger("clerk_audit.supervisor")

RESTART_S = (0.2, 1.0, 5.0)
"""Pauses before restarting a projector that exited, by how many times in a row it did."""
STEADY_S = 60.0
"""A projector that ran this long before it exited starts the count of failures again."""
STOP_TIMEOUT_S = 10.0


class ProjectorProcess:
    """``with ProjectorProcess(log, projections):`` keeps a projector running in the block."""

    def __init__(self, log_path: LogLocation, projections_path: Path) -> None:
        self._command = [
            sys.executable, "-m", "eventstore.cli", "project", "--follow",
            "--projections-db", str(projections_path), "--parent", str(os.getpid()),
        ]  # fmt: skip
        self._env = {**os.environ, DB_ENV: location_text(log_path)}  # a URL's password: not in argv
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._watch, name="clerk-audit-supervisor")
        self.starts = 0

    def __enter__(self) -> ProjectorProcess:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._process.pid if self._process is not None else None

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = subprocess.Popen(
                    self._command, stdin=subprocess.DEVNULL, env=self._env
                )
                self.starts += 1
            started = time.monotonic()
            code = self._process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STEADY_S:
                failures = 0
            pause = RESTART_S[min(failures, len(RESTART_S) - 1)]
            failures += 1
            log.error("the projector exited (code %s); restarting it in %.1f s", code, pause)
            self._stopping.wait(pause)

    def stop(self) -> None:
        """Ask the projector to finish its batch and exit; kill it if it does not in time."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.error("the projector did not stop in %.0f s; killing it", STOP_TIMEOUT_S)
                process.kill()
                process.wait()
        if self._thread.is_alive():
            self._thread.join()
