"""The PostgreSQL log's writer in one server process: group commit under a table lock.

As ``eventstore.writer`` does for SQLite, one thread takes every job waiting at that moment and
runs them in one transaction with one commit, and each request is answered only after that
commit (``synchronous_commit = on``: the database's WAL is on disk). The jobs are the same
objects and run the same SQL (``eventstore.log`` through ``eventstore.pg.sql.PgSql``).

Several writers, one order. Any number of server processes may append to one database. Each
group first takes ``LOCK TABLE events IN EXCLUSIVE MODE`` (readers go on; other writers wait),
then reads the chain head and appends after it, and commits, which releases the lock. So the
order in which positions are given is the order in which they commit, and the chain has one
order too: a follower that reads ``position > checkpoint`` can never skip an event that
commits late with a lower position, because there is none. This is eventsourcing's choice (a
table lock on insert) rather than Marten's high-water mark with gap detection: it is exactly
right with no timing rule to get wrong, the chain needs a single order anyway, and group
commit spreads the lock's cost over a whole group. The schema enforces the same (each position
must be the one after the last, ``eventstore.pg.schema``); the lock only keeps writers from
colliding. The cost is that writers take turns: see bench/analysis.md.

A group of appends alone is parsed before it takes the lock and then sent pipelined: only the
look-up of its ``event_id``s and the chain head wait for an answer, so a group costs two round
trips. If the database refuses any of it, the group is rolled back and run again the careful
way, each batch and job under a savepoint of its own.

If the group cannot commit (the database unreachable or restarting, the lock not had within
the busy timeout), every job fails with :class:`StoreUnavailable` (a 503) and nothing of it is
kept; its deliveries are held and written first in the next group that commits. Connections
come from a bounded pool that replaces broken ones, so the server recovers by itself when the
database is back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from eventstore.errors import EventConflict, StoreError
from eventstore.location import PostgresLog
from eventstore.pg.connect import open_pool, translate
from eventstore.pg.sql import PgSql
from eventstore.records import DeliveryRecord
from eventstore.writer import (
    AppendJob,
    DeliveryJob,
    Job,
    Pending,
    Settle,
    append_jobs,
    as_unavailable,
    fail_group,
    take_group,
)
from eventstore.writer import _settle as settle_futures

log = logging.getLogger("clerk_audit.writer")

T = TypeVar("T")


class PgGroupCommitWriter:
    """Owns this process's writes to the PostgreSQL log; see the module docstring. The same
    interface as ``eventstore.writer.GroupCommitWriter``."""

    def __init__(
        self,
        location: PostgresLog,
        *,
        busy_timeout_ms: int,
        settle: Settle | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._location = location
        self._timeout_s = busy_timeout_ms / 1000
        self._settle: Settle = settle or settle_futures
        self._on_commit = on_commit
        self._pool = open_pool(location, busy_timeout_ms)
        self._held: list[DeliveryRecord] = []
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
        self._queue.put([Pending(job, handle)])

    def enqueue_all(self, jobs: list[tuple[Job[Any], Any]]) -> None:
        self._queue.put([Pending(job, handle) for job, handle in jobs])

    def close(self) -> None:
        """Finish the jobs already submitted, then stop the thread and close the pool."""
        self._queue.put(None)
        self._thread.join()
        self._pool.close()

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            self._commit(take_group(self._queue, first))
        if self._held:
            self._commit([])

    def _commit(self, group: list[Pending[Any]]) -> None:
        try:
            self._transaction(group)
            committed = True
        except StoreError as error:
            committed = False
            fail_group(group, as_unavailable(error), self._held)
        except Exception:  # a bug must not leave requests waiting for ever
            committed = False
            log.exception("the writer failed on a group of %d jobs", len(group))
            failure = "internal error while writing; see the server log"
            fail_group(group, StoreError(failure, public=failure), self._held)
        self._settle(group)
        if committed and self._on_commit is not None:
            self._on_commit()

    def _transaction(self, group: list[Pending[Any]]) -> None:
        """One transaction for the held deliveries and ``group``, under the append lock:
        pipelined if it can be, else (or if the database refused any of it) job by job."""
        try:
            with self._pool.connection(timeout=self._timeout_s) as conn:
                sql = PgSql(conn, self._location)
                if not self._pipelined(sql, group):
                    self._careful(sql, group)
            self._held.clear()
        except (psycopg.Error, PoolTimeout) as error:
            raise translate(error, self._location) from error

    def _pipelined(self, sql: PgSql, group: list[Pending[Any]]) -> bool:
        """Run a group of appends alone as one batch, with every statement that nothing waits
        for (the lock, the inserts, the commit) sent without waiting for its answer: two round
        trips to the database instead of a dozen. False (rolled back) if the group holds other
        jobs, deliveries are held, or the database refused any of it."""
        jobs = [p.job for p in group if isinstance(p.job, AppendJob)]
        if self._held or len(jobs) != len(group):
            return False
        records = [job.record() for job in jobs]  # parsed before the lock: writers take turns
        try:
            with sql.conn.pipeline():
                sql.execute("BEGIN")
                sql.execute("LOCK TABLE events IN EXCLUSIVE MODE")
                results = append_jobs(sql, jobs, records)
                sql.execute("COMMIT")
        except BaseException as error:
            _rollback(sql.conn)
            if isinstance(error, psycopg.Error | StoreError):
                return False
            raise
        for pending, (outcome, failed) in zip(group, results, strict=True):
            pending.outcome, pending.failed = outcome, failed
        return True

    def _careful(self, sql: PgSql, group: list[Pending[Any]]) -> None:
        """``group`` after the held deliveries, each batch and job under a savepoint."""
        sql.execute("BEGIN")
        try:
            sql.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            self._write_held(sql)
            self._run_group(sql, group)
            sql.execute("COMMIT")
        except BaseException:
            _rollback(sql.conn)
            raise

    def _run_group(self, sql: PgSql, group: list[Pending[Any]]) -> None:
        """Run a group's jobs in order, each run of consecutive appends as one batch; if the
        database refuses a batch, its jobs run again each under a savepoint of its own."""
        for appends, run in itertools.groupby(group, key=lambda p: isinstance(p.job, AppendJob)):
            pendings = list(run)
            if appends:
                jobs = [p.job for p in pendings if isinstance(p.job, AppendJob)]
                results, refused = _attempt(sql, partial(append_jobs, sql, jobs))
                if refused:
                    results = [_attempt(sql, partial(p.job.run, sql)) for p in pendings]
            else:
                results = [_attempt(sql, partial(p.job.run, sql)) for p in pendings]
            for pending, (outcome, failed) in zip(pendings, results, strict=True):
                pending.outcome, pending.failed = outcome, failed

    def _write_held(self, sql: PgSql) -> None:
        for row in self._held:
            outcome, failed = _attempt(sql, partial(DeliveryJob(row).run, sql))
            if failed:
                log.error("could not record a held %s delivery: %s", row.outcome, outcome)


def _attempt(sql: PgSql, run: Callable[[], Any]) -> tuple[Any, bool]:
    """``run()`` under a savepoint: (its result, False), or (the error, True) if the database
    refused it, undone alone; an error of the database itself aborts the whole group."""
    sql.execute("SAVEPOINT attempt")
    try:
        outcome, failed = run(), False
    except EventConflict as conflict:
        outcome, failed = conflict, True
    except StoreError as error:
        if type(error) is not StoreError:
            raise
        sql.execute("ROLLBACK TO SAVEPOINT attempt")
        outcome, failed = error, True
    sql.execute("RELEASE SAVEPOINT attempt")
    return outcome, failed


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """Undo the open transaction if the connection still can (the pool discards it if not)."""
    if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        log.debug("rollback failed; the pool discards the connection")
