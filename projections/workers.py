"""Running a rebuild's parsing and folding in worker processes, results in order.

A rebuild spends most of its time in Python on each event (parsing its JSON, working out its
timeline row and its claim), which one process does on one core under the GIL. Worker
processes do that part for chunks of the log while the rebuilding process writes the rows of
the chunks already done: the writes overlap the parsing, and every core parses. The results
come back in the order the jobs were given, so the rows are written in log order as before.

Only a few chunks are in flight at a time, so a worker that runs ahead never piles results
up in memory. With ``workers=0`` the jobs run in this process (the same functions), which is
what small logs use: starting a process costs more than they take.
"""

from __future__ import annotations

import gc
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

from eventstore.db import open_reader
from eventstore.errors import StoreError

R = TypeVar("R")
Map = Callable[[Callable[..., R], Iterable[tuple[Any, ...]]], Iterator[R]]
"""``run(fn, jobs)``: ``fn(*job)`` for each job, in order."""

MAX_WORKERS = 4
IN_FLIGHT_PER_WORKER = 2
POOL_MIN_EVENTS = 50_000
"""Below this, worker processes take longer to start than the rebuild takes without them."""


def default_workers() -> int:
    """One worker per core (the rebuilding process writes while they parse), at most 4."""
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


def _in_process(fn: Callable[..., R], jobs: Iterable[tuple[Any, ...]]) -> Iterator[R]:
    return (fn(*job) for job in jobs)


def _in_order(
    pool: ProcessPoolExecutor, limit: int, fn: Callable[..., R], jobs: Iterable[tuple[Any, ...]]
) -> Iterator[R]:
    pending: deque[Future[R]] = deque()
    for job in jobs:
        pending.append(pool.submit(fn, *job))
        if len(pending) >= limit:
            yield _result(pending.popleft())
    while pending:
        yield _result(pending.popleft())


def _result(future: Future[R]) -> R:
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise StoreError(f"a rebuild worker process died ({error})") from error


@contextmanager
def worker_pool(workers: int) -> Iterator[Map[Any]]:
    """A ``run(fn, jobs)`` using ``workers`` processes (none: this process) for the block.

    ``fn`` must be a module-level function and jobs and results picklable.
    """
    if workers <= 0:
        yield _in_process
        return
    context = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=gc.disable) as pool:
        limit = workers * IN_FLIGHT_PER_WORKER

        def run(fn: Callable[..., Any], jobs: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
            return _in_order(pool, limit, fn, jobs)

        yield run
