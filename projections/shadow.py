"""Filling a rebuild's shadow tables from the log, in one process or several.

The log up to the rebuild's start is cut into position ranges. For each range, a worker parses
the events, writes their timeline rows and reduces their claims (``projections.winners``); the
winners of all ranges are merged, and the winning events are read back, split among the
workers again, to write the entity rows. Workers write in short transactions of their own
(SQLite lets one writer in at a time; each holds the lock for one batch), so neither the other
workers nor the live server wait long.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import multiprocessing
import os
import signal
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

from eventstore.db import connect, transaction
from projections.apply import insert_timeline, upsert_sql
from projections.entities import SPECS
from projections.fold import LoggedEvent, claim, entity_row, parse_logged, timeline_row
from projections.schema import INDEXES, TIMELINE, index_ddl
from projections.tables import SHADOW_NAMES, create_tables, drop_tables
from projections.winners import Winner, Winners

Progress = Callable[[int], None]
"""Told how many more events were read."""

SCAN_BATCH = 5_000
FETCH_BATCH = 500
PARALLEL_FROM = 50_000
"""Logs shorter than this are rebuilt in-process: starting workers would cost more."""
PARTS_PER_WORKER = 4
_PR_SET_PDEATHSIG = 1


def default_workers(events: int) -> int:
    """How many processes to rebuild ``events`` events with."""
    if events < PARALLEL_FROM:
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0))))


def scan(
    conn: sqlite3.Connection, after: int, upto: int | None = None, batch: int = SCAN_BATCH
) -> Iterator[list[LoggedEvent]]:
    """The log's projectable events in ``(after, upto]``, in position order, in batches."""
    limit = "AND position <= ?" if upto is not None else ""
    sql = (
        f"SELECT position, event_id, body FROM events WHERE position > ? {limit} "
        "AND status = 'ok' ORDER BY position LIMIT ?"
    )
    while True:
        args = (after, upto, batch) if upto is not None else (after, batch)
        rows = conn.execute(sql, args).fetchall()
        if not rows:
            return
        yield [e for row in rows if (e := parse_logged(*row)) is not None]
        after = rows[-1][0]


def fill_timeline(conn: sqlite3.Connection, after: int, upto: int, winners: Winners) -> int:
    """Write the timeline rows of ``(after, upto]`` and reduce its claims into ``winners``."""
    count = 0
    for events in scan(conn, after, upto):
        for event in events:
            found = claim(event)
            if found is not None:
                winners.add(found, event.position)
        with transaction(conn):
            insert_timeline(conn, map(timeline_row, events), SHADOW_NAMES[TIMELINE])
        count += len(events)
    return count


def _winning_rows(
    conn: sqlite3.Connection, winners: Sequence[Winner]
) -> Iterator[tuple[str, tuple[object, ...]]]:
    positions = [winner[2] for winner in winners]
    marks = ", ".join("?" * len(positions))
    sql = f"SELECT position, event_id, body FROM events WHERE position IN ({marks})"
    events = {row[0]: row for row in conn.execute(sql, positions).fetchall()}
    for table, _, position, deleted, deleted_at in winners:
        event = parse_logged(*events[position])
        found = claim(event) if event is not None else None
        if event is not None and found is not None:
            yield table, entity_row(found, event, (deleted, deleted_at))


def fill_entities(conn: sqlite3.Connection, winners: Sequence[Winner]) -> int:
    """Write the entity row of each winner (in the order given)."""
    for start in range(0, len(winners), SCAN_BATCH):
        by_table: dict[str, list[tuple[object, ...]]] = {}
        for offset in range(start, min(start + SCAN_BATCH, len(winners)), FETCH_BATCH):
            for table, row in _winning_rows(conn, winners[offset : offset + FETCH_BATCH]):
                by_table.setdefault(table, []).append(row)
        with transaction(conn):
            for spec in SPECS:
                conn.executemany(upsert_sql(spec, SHADOW_NAMES[spec.table]),
                                 by_table.get(spec.table, ()))  # fmt: skip
    return len(winners)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the rebuild that started it ends (killed or
    interrupted), instead of filling shadow tables nobody will swap in. Linux only."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the request above took effect
        os._exit(1)


def _timeline_part(path: Path, after: int, upto: int) -> tuple[int, Winners]:
    """A worker's share of the timeline (its own connection)."""
    conn = connect(path, synchronous="NORMAL")
    try:
        winners = Winners()
        return fill_timeline(conn, after, upto, winners), winners
    finally:
        conn.close()


def _entity_part(path: Path, winners: list[Winner]) -> int:
    conn = connect(path, synchronous="NORMAL")
    try:
        return fill_entities(conn, winners)
    finally:
        conn.close()


def _ranges(upto: int, parts: int) -> list[tuple[int, int]]:
    bounds = [upto * n // parts for n in range(parts + 1)]
    return [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]


def _fill_parallel(
    pool: Executor, path: Path, upto: int, parts: int, progress: Progress | None
) -> tuple[int, Winners]:
    winners, count = Winners(), 0
    futures = [pool.submit(_timeline_part, path, lo, hi) for lo, hi in _ranges(upto, parts)]
    for future in futures:
        part_count, part_winners = future.result()
        winners.merge(part_winners)
        count += part_count
        if progress is not None:
            progress(part_count)
    ordered = winners.ordered()
    jobs = [
        pool.submit(_entity_part, path, ordered[lo:hi]) for lo, hi in _ranges(len(ordered), parts)
    ]
    for job in jobs:
        job.result()
    return count, winners


def _fill_here(
    conn: sqlite3.Connection, upto: int, progress: Progress | None
) -> tuple[int, Winners]:
    winners, count = Winners(), 0
    for lo, hi in _ranges(upto, max(1, upto // (SCAN_BATCH * 4))):
        part_count = fill_timeline(conn, lo, hi, winners)
        count += part_count
        if progress is not None:
            progress(part_count)
    fill_entities(conn, winners.ordered())
    return count, winners


def build_shadow(
    conn: sqlite3.Connection, path: Path, upto: int, generation: int, *, workers: int,
    progress: Progress | None = None,
) -> int:  # fmt: skip
    """Create the shadow tables and fill them with the log up to ``upto``; returns the number
    of events projected."""
    with transaction(conn):
        drop_tables(conn, SHADOW_NAMES)
        create_tables(conn, SHADOW_NAMES)
    if workers > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_die_with_parent, initargs=(os.getpid(),)
        ) as pool:
            count, _ = _fill_parallel(pool, path, upto, workers * PARTS_PER_WORKER, progress)
    else:
        count, _ = _fill_here(conn, upto, progress)
    for index in INDEXES:
        with transaction(conn):
            conn.execute(index_ddl(index, SHADOW_NAMES[index.table], generation))
    return count
