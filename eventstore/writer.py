"""The single writer of the log: one thread owns the write connection and commits in groups.

Requests hand jobs to :class:`GroupCommitWriter` and wait. The writer thread takes every job
waiting at that moment, runs them all in one ``BEGIN IMMEDIATE`` transaction and commits once:
one fsync (``synchronous=FULL``) for the whole group. Only then is each job's future resolved,
so a 2xx is never sent for an event that is not durably committed. Nothing but the log
(``events`` and ``deliveries``) is written here: the projections follow the log in a process
of their own (``projections.projector``). Consecutive appends run together, one statement per
table for all of them (:func:`append_jobs`); if the store refuses such a batch, it is undone
and its jobs run again each under its own SAVEPOINT, so one refused job does not undo the
others. SQLite releases the GIL while it writes and syncs, so the thread overlaps the event
loop.

If the transaction cannot commit (locked too long, disk full, read-only, damaged or replaced
file), every job of the group fails with :class:`StoreUnavailable` at once and nothing of the group
is kept. The deliveries of that group (``unavailable``, or ``rejected`` for a refused request) are
held in memory and written first in the next group that commits, so every request still leaves its
``deliveries`` row once the store recovers (unless the server stops before it does).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from eventstore.db import (
    BUSY_TIMEOUT_MS,
    WRITER_CACHE_KIB,
    connect,
    transaction,
    translate,
)
from eventstore.engine import sqlite3
from eventstore.errors import EventConflict, StoreError, StoreUnavailable
from eventstore.log import (
    append_many,
    event_record,
    log_position,
    record_deliveries,
    record_delivery,
    sha256_hex,
)
from eventstore.records import DeliveryRecord, EventRecord, Outcome
from eventstore.sql import Sql

log = logging.getLogger("clerk_audit.writer")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

MAX_GROUP = 1024
MAX_HELD = 10_000
"""Most deliveries held while the store cannot commit; beyond this the oldest are dropped."""


class Job(Protocol[T_co]):
    def run(self, conn: Sql) -> T_co: ...

    def unavailable(self, reason: str) -> DeliveryRecord | None: ...


@dataclass(frozen=True, slots=True)
class Appended:
    """What became of an appended event."""

    outcome: Literal["stored", "duplicate", "quarantined"]
    position: int


@dataclass(frozen=True, slots=True)
class AppendJob:
    """Append one verified event and record its delivery.

    It carries the delivery as the event loop verified it; the body is parsed here, in the
    writer thread, as far as the log's columns need.
    """

    event_id: str
    svix_timestamp: int
    received_at: str
    body: bytes
    remote_addr: str | None = None
    user_agent: str | None = None

    def record(self) -> EventRecord:
        """The log record of this event (parsing its body)."""
        return event_record(
            event_id=self.event_id,
            svix_timestamp=self.svix_timestamp,
            received_at=self.received_at,
            body=self.body,
        )

    def delivery(self, outcome: Outcome, reason: str | None, body_sha256: str) -> DeliveryRecord:
        return DeliveryRecord(
            received_at=self.received_at,
            outcome=outcome,
            event_id=self.event_id,
            svix_timestamp=self.svix_timestamp,
            reason=reason,
            remote_addr=self.remote_addr,
            user_agent=self.user_agent,
            body_sha256=body_sha256,
        )

    def run(self, conn: Sql) -> Appended:
        ((outcome, _),) = append_jobs(conn, [self])
        if isinstance(outcome, EventConflict):
            raise outcome
        return outcome

    def unavailable(self, reason: str) -> DeliveryRecord:
        return self.delivery("unavailable", reason, sha256_hex(self.body))


def append_jobs(
    conn: Sql, jobs: Sequence[AppendJob], records: Sequence[EventRecord] | None = None
) -> list[tuple[Appended | EventConflict, bool]]:
    """Run ``jobs`` together: one look-up and one insert for their events, one insert for their
    deliveries. ``records``: the jobs' records, if made already (before taking a lock).

    :returns: ``(outcome, failed)`` per job: an :class:`Appended`, or the :class:`EventConflict`
        of an ``event_id`` stored with another body (its ``conflict`` delivery is recorded).
    """
    if records is None:
        records = [job.record() for job in jobs]
    outcomes: list[tuple[Appended | EventConflict, bool]] = []
    deliveries: list[DeliveryRecord] = []
    for job, record, result in zip(jobs, records, append_many(conn, records), strict=True):
        if isinstance(result, EventConflict):
            deliveries.append(job.delivery("conflict", str(result), record.body_sha256))
            outcomes.append((result, True))
            continue
        status, position = result
        quarantined = status == "stored" and record.status == "quarantined"
        outcome: Literal["stored", "duplicate", "quarantined"] = (
            "quarantined" if quarantined else status
        )
        reason = record.quarantine_reason if quarantined else None
        deliveries.append(job.delivery(outcome, reason, record.body_sha256))
        outcomes.append((Appended(outcome, position), False))
    record_deliveries(conn, deliveries)
    return outcomes


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """Record a delivery that stored nothing (rejected, too large)."""

    delivery: DeliveryRecord

    def run(self, conn: Sql) -> None:
        record_delivery(conn, self.delivery)

    def unavailable(self, reason: str) -> DeliveryRecord:
        return self.delivery


class PositionJob:
    """Read the log position inside a write transaction (proves the store is writable)."""

    def run(self, conn: Sql) -> int:
        return log_position(conn)

    def unavailable(self, reason: str) -> None:
        return None


def _fatal(error: StoreError) -> bool:
    """Whether a store error must abort the whole group (the store itself is failing)."""
    return type(error) is not StoreError


@dataclass(slots=True)
class Pending(Generic[T]):
    """A queued job and, once its group is done, its outcome: what ``settle`` is given."""

    job: Job[T]
    future: Any
    """The ``asyncio.Future`` awaiting the job, or what ``settle`` knows it by."""
    outcome: Any = None
    failed: bool = False


Settle = Callable[[list[Pending[Any]]], None]
"""Told each committed (or failed) group, in the writer thread."""


class GroupCommitWriter:
    """Owns the store's write connection in a thread of its own; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        settle: Settle | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        """:param settle: how a group's outcomes reach their requests (default: the futures
        :meth:`submit` made, resolved on their event loops).
        :param on_commit: called in the writer thread after each group that committed (the
            feed's long polls wake on it, ``eventstore.feed``); it must be quick."""
        self._path = path
        self._settle: Settle = settle or _settle
        self._on_commit = on_commit
        self._conn = connect(
            path,
            busy_timeout_ms=busy_timeout_ms,
            cache_kib=WRITER_CACHE_KIB,
            temp_in_memory=True,
        )
        self._identity = _identity(path)
        self._held: list[DeliveryRecord] = []
        self._detached = False
        self._queue: queue.SimpleQueue[list[Pending[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="clerk-audit-writer", daemon=True)
        self._thread.start()

    async def submit(self, job: Job[T]) -> T:
        """Run ``job`` in the next group; returns once its group is committed.

        :raises StoreUnavailable: the group could not be committed.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.enqueue(job, future)
        return await future

    def enqueue(self, job: Job[Any], handle: Any) -> None:
        """Queue ``job`` for the next group; ``handle`` is given back to ``settle`` with it."""
        self._queue.put([Pending(job, handle)])

    def enqueue_all(self, jobs: list[tuple[Job[Any], Any]]) -> None:
        """Queue ``(job, handle)`` pairs to go in one group together."""
        self._queue.put([Pending(job, handle) for job, handle in jobs])

    def close(self) -> None:
        """Finish the jobs already submitted, then stop the thread, fold the write-ahead log
        into the file and close the connection.

        SQLite folds it in by itself only when the last connection closes, and the projector's
        read-only one may still be open: without this, a stopped server could leave every
        event in ``audit.db-wal``, and a copy of ``audit.db`` alone would hold none of them.
        """
        self._queue.put(None)
        self._thread.join()
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as error:
            log.warning("the log's write-ahead log was not folded into the file: %s", error)
        self._conn.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._write_held_on_close()
                return
            self._commit(take_group(self._queue, first))

    def _commit(self, group: list[Pending[Any]]) -> None:
        committed = False
        try:
            self._check_identity()
            with transaction(self._conn, self._path):
                self._write_held()
                self._run_group(group)
            self._held.clear()
            committed = True
        except StoreError as error:
            fail_group(group, as_unavailable(error), self._held)
        except Exception:  # a bug must not leave requests waiting for ever
            log.exception("the writer failed on a group of %d jobs", len(group))
            failure = "internal error while writing; see the server log"
            fail_group(group, StoreError(failure, public=failure), self._held)
        self._settle(group)
        if committed and self._on_commit is not None:
            self._on_commit()

    def _run_group(self, group: list[Pending[Any]]) -> None:
        """Run a group's jobs in order, each run of consecutive appends as one batch."""
        for appends, run in itertools.groupby(group, key=lambda p: isinstance(p.job, AppendJob)):
            pendings = list(run)
            if appends:
                self._append_batch(pendings)
            else:
                for pending in pendings:
                    pending.outcome, pending.failed = self._in_savepoint(pending.job)

    def _append_batch(self, pendings: list[Pending[Any]]) -> None:
        """Append together (:func:`append_jobs`) under one savepoint. If the store refuses the
        batch without failing itself, it is undone and each job runs under a savepoint of its
        own, so one refused job does not undo the others."""
        jobs = [p.job for p in pendings if isinstance(p.job, AppendJob)]
        results, refused = self._attempt(lambda: append_jobs(self._conn, jobs))
        if refused:
            results = [self._in_savepoint(pending.job) for pending in pendings]
        for pending, (outcome, failed) in zip(pendings, results, strict=True):
            pending.outcome, pending.failed = outcome, failed

    def _in_savepoint(self, job: Job[Any]) -> tuple[Any, bool]:
        """Run ``job`` under a savepoint of its own: (outcome, failed)."""
        return self._attempt(lambda: job.run(self._conn))

    def _attempt(self, run: Callable[[], Any]) -> tuple[Any, bool]:
        """``run()`` under a savepoint: (its result, False), or (the error, True) if the store
        refused it, undone alone; an error of the store itself aborts the whole group."""
        self._conn.execute("SAVEPOINT attempt")
        try:
            outcome, failed = run(), False
        except sqlite3.Error as error:
            store_error = translate(error, self._path)
            if _fatal(store_error):
                raise store_error from error
            self._conn.execute("ROLLBACK TO attempt")
            outcome, failed = store_error, True
        except EventConflict as conflict:
            outcome, failed = conflict, True
        self._conn.execute("RELEASE attempt")
        return outcome, failed

    def _write_held(self) -> None:
        """Record the deliveries of groups that could not commit (inside this transaction)."""
        for row in self._held:
            outcome, failed = self._in_savepoint(DeliveryJob(row))
            if failed:
                log.error("could not record a held %s delivery: %s", row.outcome, outcome)

    def _write_held_on_close(self) -> None:
        if not self._held:
            return
        try:
            self._check_identity()
            with transaction(self._conn, self._path):
                self._write_held()
        except StoreError as error:
            log.error("could not record %d held deliveries: %s", len(self._held), error)

    def _check_identity(self) -> None:
        """Refuse to write once the file at our path is not the one we opened."""
        if _identity(self._path) == self._identity:
            return
        if not self._detached:
            self._detach()
        problem = "was removed or replaced while the server was running; restart the server"
        raise StoreUnavailable(f"{self._path} {problem}", public=f"the store file {problem}")

    def _detach(self) -> None:
        """Move everything committed into the file we have open (wherever it is now) and empty
        the write-ahead log. SQLite finds the log by name: left full, it would be missing from
        the moved file and replayed into whatever file now has our name."""
        self._detached = True
        moved = f"{self._path} was moved or removed while the server was running"
        try:
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as error:
            log.error("%s; its write-ahead log could not be emptied: %s", moved, error)
            return
        if busy:
            log.error("%s; its write-ahead log could not be emptied (readers busy)", moved)
            return
        log.error("%s; everything committed is now in the file it opened at start-up, and "
                  "nothing more is written", moved)  # fmt: skip


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def take_group(
    waiting: queue.SimpleQueue[list[Pending[Any]] | None], first: list[Pending[Any]]
) -> list[Pending[Any]]:
    """``first`` and every job waiting behind it, up to about :data:`MAX_GROUP` (jobs queued
    together stay together); a stop (None) met on the way is put back for the writer's loop to
    see next."""
    group = list(first)
    while len(group) < MAX_GROUP:
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            break
        if item is None:
            waiting.put(None)
            break
        group.extend(item)
    return group


def fail_group(group: list[Pending[Any]], error: StoreError, held: list[DeliveryRecord]) -> None:
    """Fail every job of ``group`` with ``error`` and hold their deliveries (at most
    :data:`MAX_HELD`, the oldest dropped) for the next group that commits."""
    for pending in group:
        pending.outcome, pending.failed = error, True
    held.extend(row for p in group if (row := p.job.unavailable(str(error))) is not None)
    if len(held) > MAX_HELD:
        dropped = len(held) - MAX_HELD
        del held[:dropped]
        log.error("store unavailable: dropped %d held delivery records", dropped)


def as_unavailable(error: StoreError) -> StoreError:
    if isinstance(error, StoreUnavailable):
        return error
    return StoreUnavailable(str(error), public=error.public)


def _settle(group: list[Pending[Any]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[Pending[Any]]] = {}
    for pending in group:
        by_loop.setdefault(pending.future.get_loop(), []).append(pending)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed while the group committed
            loop.call_soon_threadsafe(_resolve, items)


def _resolve(items: list[Pending[Any]]) -> None:
    for pending in items:
        if pending.future.done():
            continue
        if pending.failed:
            pending.future.set_exception(pending.outcome)
        else:
            pending.future.set_result(pending.outcome)
