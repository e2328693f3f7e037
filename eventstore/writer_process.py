"""The log's group-commit writer in a process of its own, fed by the server over a socket.

In one interpreter, the event loop (HTTP, verification) and the writer thread (parsing,
inserts, commits) share one GIL: every SQLite call and every hash of a body over 2 KiB hands
it over, and the two threads queue for it. Here the server keeps the loop, and a child process
(``python -m eventstore.writer_process``) runs the writer of ``eventstore.writer`` (or
``eventstore.pg.writer``) on the second core. Jobs go over a socket pair in length-prefixed
pickle frames; each committed group comes back as one frame. While the child holds a frame,
the jobs that arrive meanwhile wait in the server and go as the next frame once it answers: the
writer could not start them earlier, and one frame per group instead of one per request spares
a write and a wake-up of the child per request.

The child lives exactly as long as the server's end of the socket: it ignores SIGINT and
SIGTERM (the server drains first), and at end of file it finishes the jobs it has, then exits.
If it dies, the requests it held get 503 (their events may or may not have been committed,
and Svix redelivers them: the log answers a redelivery as a duplicate), and the server starts
another, after a pause that grows while it keeps failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from eventstore.errors import StoreUnavailable
from eventstore.location import DB_ENV, LogLocation, location_text, parse_location
from eventstore.settings import LOG_FORMAT
from eventstore.writer import Job, Pending

log = logging.getLogger("clerk_audit.writer")

T = TypeVar("T")
FRAME = struct.Struct("!I")
RESTART_S = (0.0, 0.2, 1.0, 5.0)
"""Pauses before starting the writer process again, by how many times in a row it stopped."""
STEADY_S = 60.0
"""A writer process that ran this long before it stopped starts the count again."""
STOP_TIMEOUT_S = 10.0
GONE = "the log's writer process stopped; it is being restarted"


def frame(items: object) -> bytes:
    data = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(data)) + data


class ProcessWriter:
    """The server's side: :meth:`submit` a job, get its outcome once its group committed."""

    def __init__(
        self,
        location: LogLocation,
        *,
        busy_timeout_ms: int,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._location = location
        self._busy_timeout_ms = busy_timeout_ms
        self._on_commit = on_commit
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._outbox: list[tuple[int, Job[Any]]] = []
        self._sent = 0
        """Jobs sent in frames the child has not answered in full yet."""
        self._child: _Child | None = None
        self._stopping = False
        self._failures = 0
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the writer process, and keep one running until :meth:`close`."""
        self._child = await _Child.start(self._location, self._busy_timeout_ms)
        self._keeper = asyncio.create_task(self._keep())

    async def submit(self, job: Job[T]) -> T:
        """Run ``job`` in the writer's next group; returns once its group is committed.

        :raises StoreUnavailable: the group could not be committed, or the process stopped.
        """
        if self._child is None:
            raise StoreUnavailable(GONE, public=GONE)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        handle = next(self._ids)
        self._waiting[handle] = future
        if not self._outbox and not self._sent:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append((handle, job))
        return await future

    def _flush(self) -> None:
        if not self._outbox or self._sent:
            return
        items, self._outbox = self._outbox, []
        if self._child is None:
            self._fail([handle for handle, _ in items])
            return
        self._sent = len(items)
        self._child.writer.write(frame(items))

    async def _keep(self) -> None:
        """Settle the outcomes the child sends; when it stops, fail what it held and start
        another."""
        while self._child is not None:
            started = time.monotonic()
            await self._read(self._child)
            self._child.end()
            self._child = None
            self._sent = 0
            self._outbox.clear()
            self._fail(list(self._waiting))
            if self._stopping:
                return
            await self._restart(time.monotonic() - started)

    async def _read(self, child: _Child) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (size,) = FRAME.unpack(await child.reader.readexactly(FRAME.size))
                self._settle(pickle.loads(await child.reader.readexactly(size)))

    def _settle(self, outcomes: list[tuple[int, Any, bool]]) -> None:
        self._sent -= len(outcomes)
        self._flush()
        committed = False
        for handle, outcome, failed in outcomes:
            future = self._waiting.pop(handle, None)
            if future is None or future.done():
                continue
            if failed:
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
                committed = True
        if committed and self._on_commit is not None:
            self._on_commit()

    def _fail(self, handles: list[int]) -> None:
        for handle in handles:
            future = self._waiting.pop(handle, None)
            if future is not None and not future.done():
                future.set_exception(StoreUnavailable(GONE, public=GONE))

    async def _restart(self, ran_s: float) -> None:
        self._failures = 0 if ran_s >= STEADY_S else self._failures + 1
        pause = RESTART_S[min(self._failures, len(RESTART_S) - 1)]
        log.error("%s (in %.1f s)", GONE, pause)
        await asyncio.sleep(pause)
        if not self._stopping:
            self._child = await _Child.start(self._location, self._busy_timeout_ms)

    async def aclose(self) -> None:
        """Let the child finish what it was given and stop; then stop keeping it."""
        self._stopping = True
        if self._waiting:  # normally none: the server answered every request before this
            await asyncio.wait(list(self._waiting.values()), timeout=STOP_TIMEOUT_S)
        if self._child is not None:
            self._child.writer.write_eof()
        if self._keeper is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._keeper), STOP_TIMEOUT_S)
        if self._child is not None:
            self._child.end()


class _Child:
    """One writer process and the server's end of its socket."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process, self.reader, self.writer = process, reader, writer

    @classmethod
    async def start(cls, location: LogLocation, busy_timeout_ms: int) -> _Child:
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "eventstore.writer_process", str(theirs.fileno()),
                   str(busy_timeout_ms)]  # fmt: skip
        text = location_text(location)
        with theirs:  # the location in the environment: a URL's password is not in argv
            process = subprocess.Popen(
                command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                env={**os.environ, DB_ENV: text},
            )  # fmt: skip
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=2**26)
        return cls(process, reader, writer)

    def end(self) -> None:
        """Close our end and wait for the process (killed if it does not stop in time)."""
        self.writer.close()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("the writer process did not stop in %.0f s; killing it", STOP_TIMEOUT_S)
            self.process.kill()
            self.process.wait()


def serve_jobs(sock: socket.socket, location: LogLocation, busy_timeout_ms: int) -> None:
    """The child's loop: jobs from ``sock`` into a group-commit writer, outcomes back."""
    from eventstore.backends import open_writer

    def settle(group: list[Pending[Any]]) -> None:
        with contextlib.suppress(OSError):  # the server is gone: nobody waits for these
            sock.sendall(frame([(p.future, p.outcome, p.failed) for p in group]))

    writer = open_writer(location, busy_timeout_ms=busy_timeout_ms, settle=settle)
    stream = sock.makefile("rb")
    try:
        while header := stream.read(FRAME.size):
            (size,) = FRAME.unpack(header)
            writer.enqueue_all([(job, handle) for handle, job in pickle.loads(stream.read(size))])
    finally:
        writer.close()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us: by end of file
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    fd, busy_timeout_ms = int(sys.argv[1]), int(sys.argv[2])
    with socket.socket(fileno=fd) as sock:
        serve_jobs(sock, parse_location(os.environ[DB_ENV]), busy_timeout_ms)


if __name__ == "__main__":
    main()
