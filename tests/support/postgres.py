"""A real PostgreSQL server for the tests: the Debian ``postgresql`` package's ``initdb`` and
``pg_ctl``, in a temporary folder, on a free loopback port, stopped after.

PostgreSQL refuses to run as root, and the tests run as root on CI: the server then runs as the
``postgres`` user the package creates (``runuser``), in a folder it owns. Where no server can be
started (no binaries, no such user), :func:`postgres_or_skip` skips with the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from eventstore.location import PostgresLog

BIN_ROOT = Path("/usr/lib/postgresql")
USER = "postgres"
_databases = itertools.count(1)


def _bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries."""
    found = sorted(BIN_ROOT.glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError(f"no PostgreSQL under {BIN_ROOT} (apt-get install postgresql)")
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL cluster in a folder of its own."""

    def __init__(self, folder: Path, durable: bool = False) -> None:
        self.folder = folder
        self.durable = durable
        self.data = folder / "data"
        self.port = _free_port()
        self._bin = _bin_dir()
        self._as_user = os.geteuid() == 0

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", USER, "--"] if self._as_user else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if self._as_user:
            entry = pwd.getpwnam(USER)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self._run(str(self._bin / "initdb"), "-D", str(self.data), "-U", USER, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip

    def start(self) -> None:
        """Start on :attr:`port`. Without fsync unless :attr:`durable` (the benchmark): the
        tests never cut the machine's power, and each test's ``CREATE DATABASE`` would
        otherwise wait for a synced checkpoint."""
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.folder} -c max_connections=200 "
                   "-c shared_buffers=128MB")  # fmt: skip
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w",
                  "-t", "60", "-l", str(self.folder / "server.log"), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def pid(self) -> int:
        """The postmaster's process id (every backend is its child)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> PostgresLog:
        """A fresh, empty database on this server: one log."""
        name = f"log_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}".encode())
        return PostgresLog(self.url(name))


@contextlib.contextmanager
def running_postgres(durable: bool = False) -> Iterator[PostgresServer]:
    """A started server in a new temporary folder, stopped and deleted after."""
    folder = Path(tempfile.mkdtemp(prefix="clerk-audit-pg-"))
    server = PostgresServer(folder, durable)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def postgres_or_skip() -> Iterator[PostgresServer]:
    """:func:`running_postgres`, or a skip saying why no server could be started."""
    try:
        started = running_postgres()
        server = started.__enter__()
    except (RuntimeError, KeyError, OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        pytest.skip(f"PostgreSQL cannot be started here: {error} {detail.decode()[-300:]}")
    try:
        yield server
    finally:
        started.__exit__(None, None, None)
