"""Running a rebuild's parsing and folding in worker processes, results in order.

A rebuild spends most of its time in Python on each event (parsing its JSON, working out its
timeline row and its claim), which one process does on one core under the GIL. Worker
processes do that part for chunks of the log, each writing what it makes into a small file of
its own (``projections.bulk``), while the rebuilding process copies the files already done
into the new projections file: every core parses, and rows cross between processes as SQLite
pages, never pickled. The results come back in the order the jobs were given.

Only a few chunks are in flight at a time, so a worker that runs ahead never piles results
up; :meth:`Pool.start` submits jobs at once, for this process to work meanwhile. With
``workers=0`` the jobs run in this process (the same functions), which is what small logs use:
starting a process costs more than they take.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

from eventstore.db import open_reader
from eventstore.engine import sqlite3
from eventstore.errors import StoreError

R = TypeVar("R")

MAX_WORKERS = 4
IN_FLIGHT_PER_WORKER = 2
POOL_MIN_EVENTS = 50_000
"""Below this, worker processes take longer to start than the rebuild takes without them."""
PART_PAGE_SIZE = 65_536
PART_CACHE_KIB = 24_576
"""A part file's pages and cache: a chunk's rows are written out in few large pages (measured:
half the CPU of an insert with 4 KiB pages and the 2 MiB default cache). A larger cache holds
a whole chunk until its commit, but costs each worker its size in memory."""
SMALL_PART_EVENTS = 10_000
"""Below this many events a part file keeps SQLite's 4 KiB pages: each of its tables takes at
least a page, and 64 KiB pages would make a small log's rebuild need megabytes of scratch
space beside the projections file."""


def default_workers() -> int:
    """One worker per core (the rebuilding process copies while they parse), at most 4."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def workers_for(events: int, requested: int | None) -> int:
    """``requested`` workers, or if None, :func:`default_workers` for a log of at least
    :data:`POOL_MIN_EVENTS` ``events`` and none for a smaller one."""
    if requested is not None:
        return requested
    return default_workers() if events >= POOL_MIN_EVENTS else 0


def job_connection(path: str) -> sqlite3.Connection:
    """A read-only connection of a job's own to the file at ``path`` (in a worker process, or
    this one)."""
    return open_reader(Path(path))


def part_page_size(events: int) -> int:
    """The page size of a part file made from ``events`` events of the log."""
    return PART_PAGE_SIZE if events >= SMALL_PART_EVENTS else 4_096


def part_connection(path: Path, events: int) -> sqlite3.Connection:
    """A new part file, made from ``events`` events of the log: written once by one process,
    read once by another, then deleted."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {part_page_size(events)}")
    conn.execute(f"PRAGMA cache_size = -{PART_CACHE_KIB}")
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN")
    return conn


def _start_worker() -> None:
    gc.disable()  # nothing a job makes is cyclic; collections would walk its state again


def _result(future: Future[R]) -> R:
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise StoreError(f"a rebuild worker process died ({error})") from error


class Pool:
    """Runs jobs in ``workers`` processes (none: in this process)."""

    def __init__(self, workers: int, executor: ProcessPoolExecutor | None) -> None:
        self.workers = workers
        self._executor = executor

    def __call__(self, fn: Callable[..., R], jobs: Iterable[tuple[Any, ...]]) -> Iterator[R]:
        """``fn(*job)`` for each job, in order. ``fn`` must be a module-level function and
        jobs and results picklable."""
        if self._executor is None:
            return (fn(*job) for job in jobs)
        return self._in_order(self._executor, fn, jobs)

    def _in_order(
        self, pool: ProcessPoolExecutor, fn: Callable[..., R], jobs: Iterable[tuple[Any, ...]]
    ) -> Iterator[R]:
        pending: deque[Future[R]] = deque()
        limit = self.workers * IN_FLIGHT_PER_WORKER
        try:
            for job in jobs:
                pending.append(pool.submit(fn, *job))
                if len(pending) >= limit:
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())
        finally:
            for future in pending:
                future.cancel()

    def start(self, fn: Callable[..., R], jobs: Iterable[tuple[Any, ...]]) -> Callable[[], list[R]]:
        """Submit ``fn(*job)`` for every job now (without workers: run them now); returns
        a function that waits for their results, in order."""
        if self._executor is None:
            results = [fn(*job) for job in jobs]
            return lambda: results
        futures = [self._executor.submit(fn, *job) for job in jobs]
        return lambda: [_result(future) for future in futures]


@contextmanager
def worker_pool(workers: int) -> Iterator[Pool]:
    """A :class:`Pool` of ``workers`` processes (none: this process) for the block."""
    if workers <= 0:
        yield Pool(0, None)
        return
    executor = ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_start_worker
    )
    try:
        yield Pool(workers, executor)
    except BaseException:
        # Stop at once: the workers' jobs are for a file that is about to be deleted.
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    else:
        executor.shutdown(wait=True)
