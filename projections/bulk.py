"""Filling a new projections file from the log, as fast as it goes (a rebuild's first part).

Nobody reads the file until it is published (``projections.files``), so it is written with no
journal and no syncs, and indexed after the load. The log up to ``upto`` is folded chunk by
chunk in position order (:func:`fold_range`): each event's timeline row is written, and its
claim reduced in memory to the winner per entity (``projections.winners``). Then the winning
events are read back, in (table, id) order, and their entity rows written
(:func:`entity_rows`). The folding (parsing each body, working out its rows and claim) runs in
worker processes for a large log (``projections.workers``) while this process writes.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from eventstore.db import connect
from projections.apply import insert_timeline, upsert_rows
from projections.entities import SPECS
from projections.fold import (
    EntityRow,
    LoggedEvent,
    TimelineRow,
    claim,
    entity_row,
    parse_logged,
    timeline_row,
)
from projections.projector import Failure, failure, record_failures
from projections.tables import create_indexes, create_tables, set_checkpoint
from projections.winners import Claimed, Winner, Winners
from projections.workers import job_connection, worker_pool, workers_for

Progress = Callable[[int], None]
"""Told how many more events were read."""
Folded = tuple[list[TimelineRow], list[Claimed], list[Failure]]
"""A chunk of the log folded: its timeline rows, its claims and the events that failed."""

SCAN_BATCH = 5_000
"""Events per chunk (and per read of the log)."""
ENTITY_BATCH = 1_000
"""Winners per chunk: each of their rows carries its snapshot (2 KB or so)."""
FETCH_BATCH = 500
"""Events a worker reads (and holds parsed) at a time."""


def scan(
    conn: sqlite3.Connection, after: int, upto: int, batch: int = FETCH_BATCH
) -> Iterator[list[tuple[int, str, bytes]]]:
    """The log's ``ok`` events in ``(after, upto]`` as ``(position, event_id, body)``, in
    position order, in batches."""
    sql = (
        "SELECT position, event_id, body FROM events WHERE position > ? AND position <= ? "
        "AND status = 'ok' ORDER BY position LIMIT ?"
    )
    while rows := conn.execute(sql, (after, upto, batch)).fetchall():
        yield rows
        after = rows[-1][0]


def _fold_one(event: LoggedEvent, rows: list[TimelineRow], claims: list[Claimed]) -> None:
    row = timeline_row(event)
    found = claim(event)
    rows.append(row)
    if found is not None:
        claims.append((found.spec.table, found.entity_id, found.key,
                       event.position, found.is_delete, found.deleted_at))  # fmt: skip


def fold_range(path: str, after: int, upto: int) -> Folded:
    """(Run by a worker.) The timeline rows and claims of the events in ``(after, upto]``, and
    the events that could not be folded."""
    conn = job_connection(path)
    folded: Folded = ([], [], [])
    try:
        for batch in scan(conn, after, upto):
            for position, event_id, body in batch:
                try:
                    event = parse_logged(position, event_id, body)
                    if event is None:
                        raise ValueError("the stored body is not an event")
                    _fold_one(event, folded[0], folded[1])
                except Exception as error:
                    folded[2].append(failure(position, event_id, error))
    finally:
        conn.close()
    return folded


def _winning_rows(
    conn: sqlite3.Connection, winners: Sequence[Winner], failures: list[Failure]
) -> Iterator[tuple[str, EntityRow]]:
    positions = [winner[2] for winner in winners]
    marks = ", ".join("?" * len(positions))
    sql = f"SELECT position, event_id, body FROM events WHERE position IN ({marks})"
    events = {row[0]: row for row in conn.execute(sql, positions).fetchall()}
    for table, _, position, deleted, deleted_at in winners:
        try:
            event = parse_logged(*events[position])
            found = claim(event) if event is not None else None
            if event is not None and found is not None:
                yield table, entity_row(found, event, (deleted, deleted_at))
        except Exception as error:
            failures.append(failure(position, events[position][1], error))


EntityChunk = tuple[dict[str, list[EntityRow]], list[Failure]]


def entity_rows(path: str, winners: Sequence[Winner]) -> EntityChunk:
    """(Run by a worker.) The entity row of each winner, per table, in the order given, and the
    winners whose row could not be made."""
    conn = job_connection(path)
    by_table: dict[str, list[EntityRow]] = {}
    failures: list[Failure] = []
    try:
        for offset in range(0, len(winners), FETCH_BATCH):
            chunk = winners[offset : offset + FETCH_BATCH]
            for table, row in _winning_rows(conn, chunk, failures):
                by_table.setdefault(table, []).append(row)
    finally:
        conn.close()
    return by_table, failures


def fill_timeline(
    conn: sqlite3.Connection,
    folded: Iterator[Folded],
    winners: Winners,
    progress: Progress | None,
) -> int:
    """Write the timeline rows of each folded chunk and reduce its claims into ``winners``."""
    count = 0
    for rows, claims, failures in folded:
        insert_timeline(conn, rows)
        record_failures(conn, failures)
        for claimed in claims:
            winners.add(*claimed)
        count += len(rows) + len(failures)
        if progress is not None:
            progress(len(rows) + len(failures))
    return count


def fill_entities(conn: sqlite3.Connection, chunks: Iterator[EntityChunk]) -> None:
    """Write the entity rows of each chunk."""
    for by_table, failures in chunks:
        for spec in SPECS:
            upsert_rows(conn, spec, by_table.get(spec.table, ()))
        record_failures(conn, failures)


def _batches(items: Iterator[Winner], size: int) -> Iterator[list[Winner]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _chunks(upto: int) -> Iterator[tuple[int, int]]:
    """The log up to ``upto`` as ``(after, upto]`` ranges of :data:`SCAN_BATCH` positions."""
    return ((after, min(after + SCAN_BATCH, upto)) for after in range(0, upto, SCAN_BATCH))


def bulk_connection(file: Path) -> sqlite3.Connection:
    """A connection for filling a new, unpublished file: no journal, no syncs (a crash leaves
    a file nobody reads, deleted by the next rebuild)."""
    conn = connect(file, synchronous="OFF", cache_kib=262_144)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    return conn


def build(
    log_path: Path,
    file: Path,
    upto: int,
    progress: Progress | None = None,
    workers: int | None = None,
) -> int:
    """Create the projections file ``file`` from the log up to ``upto``; returns the number
    of events projected. ``workers``: processes that parse and fold (None: one per core for a
    large log, none for a small one)."""
    conn = bulk_connection(file)
    winners, where = Winners(), str(log_path)
    try:
        conn.execute("BEGIN")
        create_tables(conn)
        with worker_pool(workers_for(upto, workers)) as run:
            jobs = ((where, after, last) for after, last in _chunks(upto))
            count = fill_timeline(conn, run(fold_range, jobs), winners, progress)
            chunks = ((where, chunk) for chunk in _batches(winners.ordered(), ENTITY_BATCH))
            fill_entities(conn, run(entity_rows, chunks))
        create_indexes(conn)
        set_checkpoint(conn, upto)
        conn.execute("COMMIT")
        conn.execute("PRAGMA locking_mode = NORMAL")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    return count
