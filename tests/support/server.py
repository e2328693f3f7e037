"""A real ``clerk-audit serve`` process on a free loopback port, for the tests.

The server is started with ``--port 0``; uvicorn binds a free port and says which in its log,
which this helper reads (no fixed ports, no sleeping). Everything the server logs is kept in
:attr:`Server.log` so tests can check what it did and did not write.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

import httpx

from eventstore.location import LogLocation, PostgresLog, location_text
from eventstore.paths import projections_path
from tests.support.signing import signed_headers
from tests.support.store import PROJECTIONS_OF

CLI = Path(sys.executable).with_name("clerk-audit")
_RUNNING = re.compile(r"Uvicorn running on (http://\S+)")
START_TIMEOUT = 30.0
PROJECTION_TIMEOUT = 30.0
SECRET_ENV = "CLERK_WEBHOOK_SIGNING_SECRET"


class Health(TypedDict):
    """The answer of ``GET /healthz``."""

    status: str
    position: int
    projected: int
    projection_errors: int


class Server:
    """A running server: its URL, its store and its captured log."""

    def __init__(
        self,
        process: subprocess.Popen[str],
        db_path: LogLocation,
        secret: str | None,
        projections: Path | None = None,
    ) -> None:
        self.process = process
        self.db_path = db_path
        self._projections = projections_path(db_path, projections, {})
        self.secret = secret
        self.lines: list[str] = []
        self.url = ""
        self._ready = threading.Event()
        self._logged = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def ingest_url(self) -> str:
        return f"{self.url}/webhooks/clerk"

    @property
    def sqlite_path(self) -> Path:
        """The log's SQLite file, for the helpers that read that file themselves; fails when
        the server runs on a PostgreSQL log."""
        assert isinstance(self.db_path, Path), (
            f"this test reads the SQLite file, but the server's log is {self.db_path}"
        )
        return self.db_path

    @property
    def projections_path(self) -> Path:
        """Where the projector writes (the default beside the log)."""
        return self._projections

    def health(self) -> Health:
        response = httpx.get(f"{self.url}/healthz", timeout=10)
        assert response.status_code == 200, response.text
        health: Health = response.json()
        return health

    def wait_projected(self, timeout: float = PROJECTION_TIMEOUT) -> Health:
        """Wait until the projector has handled every event in the log (``projected ==
        position`` on ``/healthz``); returns that health answer."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health["projected"] == health["position"]:
                return health
            assert time.monotonic() < deadline, f"projections stuck at {health}:\n{self.log}"
            self.process.poll()
            threading.Event().wait(0.01)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._logged:
                self.lines.append(line)
                self._logged.notify_all()
            match = _RUNNING.search(line)
            if match:
                self.url = match.group(1)
                self._ready.set()
        self._ready.set()

    def wait_for_log(self, text: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until the server has logged ``text``: whatever it logged before is then in
        :attr:`log` too (a delivery's log line is written before its answer, but read from the
        pipe by another thread)."""
        with self._logged:
            found = self._logged.wait_for(lambda: text in self.log, timeout)
        assert found, f"the server did not log {text!r}:\n{self.log}"

    def wait_ready(self) -> None:
        if not self._ready.wait(START_TIMEOUT) or not self.url:
            self.stop()
            raise RuntimeError(f"server did not start:\n{self.log}")

    def post(
        self,
        event_id: str,
        body: bytes,
        *,
        client: httpx.Client | None = None,
        at: int | None = None,
        secret: str | None = None,
    ) -> httpx.Response:
        """POST ``body`` signed with the server's secret (or ``secret``)."""
        signing = secret or self.secret
        assert signing is not None, "this server uses its development secret: pass secret="
        headers = signed_headers(signing, event_id, body, at=at)
        if client is not None:
            return client.post(self.ingest_url, content=body, headers=headers)
        return httpx.post(self.ingest_url, content=body, headers=headers, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server with ``sig`` and return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        # A process the server left behind may still hold the pipe; closing it under the
        # reading thread would block for as long as that process lives.
        assert not self._reader.is_alive(), (
            f"something still writes the server's output:\n{self.log}"
        )
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def serve_command(db_path: LogLocation, *extra: str) -> list[str]:
    db = location_text(db_path)
    return [str(CLI), "serve", "--host", "127.0.0.1", "--port", "0", "--db", db, *extra]


@contextmanager
def running_server(
    db_path: LogLocation,
    secret: str | None,
    *,
    env: Mapping[str, str] | None = None,
    extra: tuple[str, ...] = (),
    cwd: Path | None = None,
) -> Iterator[Server]:
    """Start ``clerk-audit serve`` on ``db_path`` with ``secret`` (via the environment; None
    leaves it unset, so the server uses its development secret). Its stdout and stderr both go
    to :attr:`Server.log`."""
    environment = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    if secret is not None:
        environment[SECRET_ENV] = secret
    environment.update(env or {})
    process = subprocess.Popen(
        serve_command(db_path, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        cwd=cwd,
    )
    given = environment.get("CLERK_AUDIT_PROJECTIONS_DB")
    server = Server(process, db_path, secret, Path(cwd or ".") / given if given else None)
    if isinstance(db_path, PostgresLog):
        PROJECTIONS_OF[db_path.url] = server.projections_path
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
