"""Recompute the whole log's hash chain, in position ranges checked side by side.

Every stored chain value can be checked against the stored value before it, so the log splits
into ranges that need no order between them: one process per range (each reads its own
snapshot; the log only grows, and a redaction changes a range's bodies and its record in one
transaction), and the first break of the first broken range is the log's first break.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

from eventstore.chain import GENESIS, Break, ChainReport, verify_rows
from eventstore.location import LogLocation, open_log_reader
from eventstore.log import chain_at, chain_rows, log_position
from eventstore.redaction import redacted_positions

MIN_PER_WORKER = 100_000
"""Below this many events per process, starting processes costs more than it saves."""

MMAP_BYTES = 1 << 40

_checked: Synchronized[int] | None = None
"""In a worker: the events checked by all workers (for the progress bar)."""


@dataclass(frozen=True, slots=True)
class Span:
    first: int
    last: int


def spans(head: int, workers: int) -> list[Span]:
    """``1..head`` cut into at most ``workers`` ranges of nearly equal length."""
    size = max(1, -(-head // max(1, workers)))
    return [Span(start, min(start + size - 1, head)) for start in range(1, head + 1, size)]


def default_workers(head: int) -> int:
    return max(1, min(os.cpu_count() or 1, head // MIN_PER_WORKER))


def check_span(
    db_path: LogLocation, span: Span, progress: Callable[[int], None] | None = None
) -> ChainReport:
    """The chain from ``span.first`` to ``span.last``, the first link checked against the
    stored value before it."""
    with closing(open_log_reader(db_path)) as conn:
        if isinstance(db_path, Path):
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")  # pages read in place, not copied
            conn.execute("BEGIN")
        else:  # PostgreSQL: one snapshot for the range and its redactions
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        previous = GENESIS
        if span.first > 1:
            stored = chain_at(conn, span.first - 1)
            try:
                previous = bytes.fromhex(stored or "")
            except ValueError:
                previous = b""
            if len(previous) != len(GENESIS):  # the range before reports it first
                return ChainReport(0, span.first - 1, "", Break(span.first - 1, "no chain value"))
        rows = chain_rows(conn, span.first, span.last)
        redacted = redacted_positions(conn).positions
        return verify_rows(rows, redacted, progress, previous=previous, first=span.first,
                           last=span.last)  # fmt: skip


def _start_worker(counter: Synchronized[int]) -> None:
    global _checked
    _checked = counter


def _count(events: int) -> None:
    assert _checked is not None
    with _checked.get_lock():
        _checked.value += events


def _worker(db_path: LogLocation, span: Span) -> ChainReport:
    return check_span(db_path, span, _count)


def combine(reports: list[ChainReport]) -> ChainReport:
    """The whole log's report from its ranges' reports, in position order."""
    events = 0
    for report in reports:
        events += report.events
        if report.broken is not None:
            return ChainReport(events, report.position, report.head, report.broken)
    last = reports[-1]
    return ChainReport(events, last.position, last.head, None)


def verify_log(
    db_path: LogLocation, workers: int | None = None, progress: Callable[[int], None] | None = None
) -> ChainReport:
    """Recompute the chain of the log at ``db_path`` up to the head when it starts, with
    ``workers`` processes (default: one per core, for logs large enough to gain)."""
    with closing(open_log_reader(db_path)) as conn:
        head = log_position(conn)
    if head == 0:
        return ChainReport(0, 0, GENESIS.hex(), None)
    parts = spans(head, workers or default_workers(head))
    if len(parts) == 1:
        return check_span(db_path, parts[0], progress)
    return combine(_in_processes(db_path, parts, progress))


def _in_processes(
    db_path: LogLocation, parts: list[Span], progress: Callable[[int], None] | None
) -> list[ChainReport]:
    context = get_context("spawn")
    counter: Synchronized[int] = context.Value("q", 0)
    with ProcessPoolExecutor(len(parts), context, _start_worker, (counter,)) as pool:
        futures: list[Future[ChainReport]] = [pool.submit(_worker, db_path, p) for p in parts]
        shown, pending = 0, True
        while pending:
            pending = bool(wait(futures, timeout=0.25).not_done)
            if progress is not None:
                checked = counter.value
                progress(checked - shown)
                shown = checked
        return [future.result() for future in futures]
