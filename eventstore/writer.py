"""The single writer: one thread owns the write connection and commits in groups.

Requests hand jobs to :class:`GroupCommitWriter` and wait. The writer thread takes every job
waiting at that moment, runs them all in one ``BEGIN IMMEDIATE`` transaction (each under its own
SAVEPOINT, so one refused job does not undo the others) and commits once: one fsync
(``synchronous=FULL``) for the whole group. Only then is each job's future resolved, so a 2xx is
never sent for an event that is not durably committed.

If the transaction cannot commit (locked too long, disk full, read-only, damaged or replaced
file), every job of the group fails with :class:`StoreUnavailable` and nothing of the group is
kept; the writer then tries, separately, to record those deliveries as ``unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from eventstore.db import connect, transaction, translate
from eventstore.errors import EventConflict, StoreError, StoreUnavailable
from eventstore.log import append, log_position, record_delivery
from eventstore.records import DeliveryRecord, EventRecord, StoredEvent

log = logging.getLogger("clerk_audit.writer")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Projector = Callable[[sqlite3.Connection, StoredEvent], None]
"""Called inside the append's transaction for each newly stored event (live projections)."""

MAX_GROUP = 1024


class Job(Protocol[T_co]):
    def run(self, conn: sqlite3.Connection, project: Projector | None) -> T_co: ...

    def unavailable(self, reason: str) -> DeliveryRecord | None: ...


@dataclass(frozen=True, slots=True)
class Appended:
    """What became of an appended event."""

    outcome: Literal["stored", "duplicate", "quarantined"]
    position: int


@dataclass(frozen=True, slots=True)
class AppendJob:
    """Append one verified event and record its delivery."""

    record: EventRecord
    delivery: DeliveryRecord

    def run(self, conn: sqlite3.Connection, project: Projector | None) -> Appended:
        try:
            status, position = append(conn, self.record)
        except EventConflict as conflict:
            record_delivery(conn, replace(self.delivery, outcome="conflict", reason=str(conflict)))
            raise
        outcome: Literal["stored", "duplicate", "quarantined"] = status
        if status == "stored" and self.record.status == "quarantined":
            outcome = "quarantined"
        reason = self.record.quarantine_reason if outcome == "quarantined" else None
        record_delivery(conn, replace(self.delivery, outcome=outcome, reason=reason))
        if status == "stored" and self.record.status == "ok" and project is not None:
            _project_guarded(conn, project, StoredEvent(position, self.record))
        return Appended(outcome, position)

    def unavailable(self, reason: str) -> DeliveryRecord:
        return replace(self.delivery, outcome="unavailable", reason=reason)


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """Record a delivery that stored nothing (rejected, too large)."""

    delivery: DeliveryRecord

    def run(self, conn: sqlite3.Connection, project: Projector | None) -> None:
        record_delivery(conn, self.delivery)

    def unavailable(self, reason: str) -> None:
        return None


class PositionJob:
    """Read the log position inside a write transaction (proves the store is writable)."""

    def run(self, conn: sqlite3.Connection, project: Projector | None) -> int:
        return log_position(conn)

    def unavailable(self, reason: str) -> None:
        return None


def _project_guarded(conn: sqlite3.Connection, project: Projector, event: StoredEvent) -> None:
    """Project ``event``; a failure of the store aborts the group, a bug in a projection only
    skips this event's projection (the event itself is kept, and logged for a rebuild)."""
    conn.execute("SAVEPOINT project")
    try:
        project(conn, event)
    except Exception as error:
        if isinstance(error, sqlite3.Error) and _fatal(translate(error)):
            raise
        conn.execute("ROLLBACK TO project")
        log.exception("projection failed for event %s; event kept", event.record.event_id)
    conn.execute("RELEASE project")


def _fatal(error: StoreError) -> bool:
    """Whether a store error must abort the whole group (the store itself is failing)."""
    return type(error) is not StoreError


@dataclass(slots=True)
class _Pending(Generic[T]):
    job: Job[T]
    future: asyncio.Future[T]
    outcome: Any = None
    failed: bool = False


class GroupCommitWriter:
    """Owns the store's write connection in a thread of its own; see the module docstring."""

    def __init__(self, path: Path, *, project: Projector | None = None) -> None:
        self._path = path
        self._project = project
        self._conn = connect(path)
        self._identity = _identity(path)
        self._queue: queue.SimpleQueue[_Pending[Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="clerk-audit-writer", daemon=True)
        self._thread.start()

    async def submit(self, job: Job[T]) -> T:
        """Run ``job`` in the next group; returns once its group is committed.

        :raises StoreUnavailable: the group could not be committed.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put(_Pending(job, future))
        return await future

    def close(self) -> None:
        """Finish the jobs already submitted, then stop the thread and close the connection."""
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                group.append(item)
            self._commit(group)

    def _commit(self, group: list[_Pending[Any]]) -> None:
        try:
            self._check_identity()
            with transaction(self._conn, self._path):
                for pending in group:
                    self._run_one(pending)
        except StoreError as error:
            for pending in group:
                pending.outcome, pending.failed = _as_unavailable(error), True
            self._record_unavailable(group, str(error))
        _settle(group)

    def _run_one(self, pending: _Pending[Any]) -> None:
        self._conn.execute("SAVEPOINT job")
        try:
            pending.outcome = pending.job.run(self._conn, self._project)
        except sqlite3.Error as error:
            store_error = translate(error, self._path)
            if _fatal(store_error):
                raise store_error from error
            self._conn.execute("ROLLBACK TO job")
            pending.outcome, pending.failed = store_error, True
        except EventConflict as conflict:
            pending.outcome, pending.failed = conflict, True
        self._conn.execute("RELEASE job")

    def _record_unavailable(self, group: list[_Pending[Any]], reason: str) -> None:
        rows = [row for p in group if (row := p.job.unavailable(reason)) is not None]
        if not rows:
            return
        try:
            with transaction(self._conn, self._path):
                for row in rows:
                    record_delivery(self._conn, row)
        except StoreError as error:
            log.error("could not record %d unavailable deliveries: %s", len(rows), error)

    def _check_identity(self) -> None:
        if _identity(self._path) != self._identity:
            raise StoreUnavailable(
                f"{self._path} was removed or replaced while the server was running; "
                "restart the server"
            )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _as_unavailable(error: StoreError) -> StoreError:
    return error if isinstance(error, StoreUnavailable) else StoreUnavailable(str(error))


def _settle(group: list[_Pending[Any]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Pending[Any]]] = {}
    for pending in group:
        by_loop.setdefault(pending.future.get_loop(), []).append(pending)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed while the group committed
            loop.call_soon_threadsafe(_resolve, items)


def _resolve(items: list[_Pending[Any]]) -> None:
    for pending in items:
        if pending.future.done():
            continue
        if pending.failed:
            pending.future.set_exception(pending.outcome)
        else:
            pending.future.set_result(pending.outcome)
