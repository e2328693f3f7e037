"""The single writer in a process of its own, so the server uses two cores.

The event loop (HTTP, svix verification, parsing) and the writer (SQLite, the live projection)
each need most of a core at full load, and in one process they take turns under the GIL:
measured on 2 cores, the event loop alone answers about 2,600 requests/s with nothing to wait
for, but only about 1,000 with the writer in a thread beside it. So ``clerk-audit serve`` runs
the :class:`~eventstore.writer.GroupCommitWriter` in a child process and talks to it over a
pipe: jobs go there in batches (one message per turn of the event loop), and each committed
group's outcomes come back in one message. Everything the writer guarantees holds as before
(a job's outcome arrives only after its group committed).

The child ignores SIGINT and SIGTERM: the server stops it by sending ``None`` once the last
request is answered, and if the server dies, the child sees its pipe close, finishes the group
in hand and exits. If the child dies, every waiting request and every later one gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from eventstore.errors import StoreUnavailable
from eventstore.writer import GroupCommitWriter, Job, Pending, Projector

log = logging.getLogger("clerk_audit.writer")

T = TypeVar("T")
Outcome = tuple[int, bool, Any]
"""``(ticket, failed, outcome or error)`` of one job."""
STOP_TIMEOUT_S = 60.0
LOST = "the writer process stopped; restart the server"


def _child(
    path: Path,
    project: Projector | None,
    busy_timeout_ms: int,
    log_level: int,
    log_format: str,
    pipe: Connection,
) -> None:
    """The writer process: jobs from ``pipe`` in, each group's outcomes back out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=log_format)

    def settle(group: list[Pending[Any]]) -> None:
        with contextlib.suppress(OSError):  # the server is gone, and its requests with it
            pipe.send([(p.future, p.failed, p.outcome) for p in group])

    writer = GroupCommitWriter(
        path, project=project, busy_timeout_ms=busy_timeout_ms, settle=settle
    )
    try:
        while (batch := _receive(pipe)) is not None:
            for ticket, job in batch:
                writer.enqueue(job, ticket)
    finally:
        writer.close()


def _receive(pipe: Connection) -> list[tuple[int, Job[Any]]] | None:
    try:
        batch: list[tuple[int, Job[Any]]] | None = pipe.recv()
    except (EOFError, OSError):
        return None
    return batch


class WriterProcess:
    """:class:`~eventstore.writer.GroupCommitWriter`'s interface, the writer in a child
    process. Used from one event loop (the server's)."""

    def __init__(
        self,
        path: Path,
        *,
        project: Projector | None = None,
        busy_timeout_ms: int,
        log_format: str = logging.BASIC_FORMAT,
    ) -> None:
        context = get_context("spawn")
        self._pipe, child_end = context.Pipe()
        level = logging.getLogger().getEffectiveLevel()
        args = (path, project, busy_timeout_ms, level, log_format, child_end)
        self._process = context.Process(target=_child, args=args, name="clerk-audit-writer")
        self._process.start()
        child_end.close()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._outbox: list[tuple[int, Job[Any]]] = []
        self._tickets = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost = False

    async def submit(self, job: Job[T]) -> T:
        """Run ``job`` in the writer's next group; returns once its group is committed.

        :raises StoreUnavailable: the group could not be committed, or the writer is gone.
        """
        loop = self._attach()
        if self._lost:
            raise StoreUnavailable(LOST, public=LOST)
        ticket = next(self._tickets)
        future: asyncio.Future[T] = loop.create_future()
        self._waiting[ticket] = future
        if not self._outbox:
            loop.call_soon(self._flush)
        self._outbox.append((ticket, job))
        return await future

    def _attach(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._pipe.fileno(), self._on_outcomes)
        return self._loop

    def _flush(self) -> None:
        batch, self._outbox = self._outbox, []
        if not batch or self._lost:
            return
        try:
            self._pipe.send(batch)
        except OSError:
            self._lose()

    def _on_outcomes(self) -> None:
        try:
            outcomes: list[Outcome] = self._pipe.recv()
        except (EOFError, OSError):
            self._lose()
            return
        for ticket, failed, outcome in outcomes:
            future = self._waiting.pop(ticket, None)
            if future is None or future.done():
                continue
            if failed:
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _lose(self) -> None:
        """The child is gone: fail everything waiting, and everything after."""
        if not self._lost:
            log.error("%s (exit code %s)", LOST, self._process.exitcode)
        self._lost = True
        if self._loop is not None:
            self._loop.remove_reader(self._pipe.fileno())
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(StoreUnavailable(LOST, public=LOST))

    def close(self) -> None:
        """Send what is queued, let the child finish every job, then stop it."""
        self._flush()
        if not self._lost:
            with contextlib.suppress(OSError):
                self._pipe.send(None)
        self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            log.error("the writer process did not stop within %.0f s; killing it", STOP_TIMEOUT_S)
            self._process.kill()
            self._process.join()
        if self._loop is not None and not self._lost:
            self._loop.remove_reader(self._pipe.fileno())
        self._pipe.close()
