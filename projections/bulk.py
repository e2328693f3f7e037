"""Filling a new projections file from the log, as fast as it goes (a rebuild's first part).

Nobody reads the file until it is published (``projections.files``), so it is written with no
journal and no syncs, and indexed after the load.

1. The log up to ``upto`` is folded chunk by chunk (:func:`fold_part`), in worker processes for
   a large log (``projections.workers``). A worker writes each chunk's timeline rows into a
   small *part file* of its own, and reduces the chunk's claims into its own winners per
   entity (``projections.winners``), kept across its chunks. The rebuilding process copies
   each part file into the new file as it is done, in log order (``INSERT ... SELECT``: rows
   cross between processes as SQLite pages, never pickled), then deletes it.
2. Every worker hands over its winners (:func:`take_winners`) and this process merges them.
3. The winning events are read back, in (table, id) order, in batches; a worker writes each
   batch's entity rows into a part file (:func:`entity_part`), copied in order like the
   timeline's, so each table's primary key is appended to, never inserted into at random.
4. The indexes are made, sorting with helper threads.

Part files are named after the new file (``<file>.part-...``) and deleted with it
(:func:`remove_parts`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from eventstore.db import connect
from projections.entities import SPECS
from projections.failures import Failure, failure, record_failures
from projections.fold import (
    TimelineRow,
    VersionRow,
    claim,
    entity_row,
    parse_logged,
    timeline_row,
    version_row,
)
from projections.history import VERSIONS, derive_all
from projections.schema import (
    TIMELINE,
    TIMELINE_COLUMNS,
    entity_table_ddl,
    table_ddl,
    timeline_ddl,
)
from projections.tables import create_indexes, create_search, create_tables, set_checkpoint
from projections.winners import Entry, Winner, Winners
from projections.workers import Pool, job_connection, worker_pool, workers_for

Progress = Callable[[int], None]
"""Told how many more events were read."""

SCAN_BATCH = 20_000
"""Events per chunk (a part file each)."""
ENTITY_BATCH = 5_000
"""Winners per batch of entity rows (a part file each)."""
FETCH_BATCH = 1_000
"""Events a worker reads (and holds parsed) at a time."""
SORT_THREADS = 4
"""``PRAGMA threads`` for the index builds: SQLite's sorter merges on helper threads."""

_SPECS = {spec.table: spec for spec in SPECS}
_INSERT_TIMELINE = (
    f"INSERT INTO {TIMELINE} ({', '.join(TIMELINE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(TIMELINE_COLUMNS))})"
)
_SUMMARY = TIMELINE_COLUMNS.index("summary")
_INSERT_VERSION = f"INSERT INTO {VERSIONS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_winners: dict[str, Winners] = {}
"""(In a worker, or this process without workers.) The claims reduced so far, per new file."""


def scan(
    conn: sqlite3.Connection, after: int, upto: int, batch: int = FETCH_BATCH
) -> Iterator[list[tuple[int, str, bytes]]]:
    """The log's ``ok`` events in ``(after, upto]`` as ``(position, event_id, body)``, in
    position order, in batches."""
    sql = (
        "SELECT position, event_id, body FROM events "
        "WHERE position > ? AND position <= ? AND status = 'ok' ORDER BY position LIMIT ?"
    )
    while rows := conn.execute(sql, (after, upto, batch)).fetchall():
        yield rows
        after = rows[-1][0]


def part_path(file: Path, name: str) -> Path:
    return file.with_name(f"{file.name}.part-{name}")


def remove_parts(file: Path) -> None:
    """Delete every part file of the new file ``file`` (left by a rebuild that stopped)."""
    prefix = f"{file.name}.part-"
    if file.parent.is_dir():
        for found in file.parent.iterdir():
            if found.name.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    found.unlink()


def _part_connection(path: Path) -> sqlite3.Connection:
    """A new part file: written once by one process, read once by another, then deleted."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN")
    return conn


def _reduce(key: str, timeline: list[TimelineRow], versions: list[VersionRow],
            rows: list[tuple[int, str, bytes]], failures: list[Failure],
            instance: str | None) -> None:  # fmt: skip
    winners = _winners.setdefault(key, Winners())
    add = winners.add
    for position, event_id, body in rows:
        try:
            event = parse_logged(position, event_id, body, instance=instance)
            if event is None:
                raise ValueError("the stored body is not an event")
            row = timeline_row(event)
            found = claim(event)
            version = version_row(found, event, row[_SUMMARY]) if found is not None else None
        except Exception as error:
            failures.append(failure(position, event_id, error))
            continue
        timeline.append(row)
        if version is not None:
            versions.append(version)
        if found is not None:
            add(found.spec.table, found.entity_id, found.key, position, found.is_delete,
                found.deleted_at)  # fmt: skip


def fold_part(
    log: str, file: str, part: str, after: int, upto: int, instance: str | None = None
) -> tuple[int, list[Failure]]:
    """(Run by a worker.) Fold the events in ``(after, upto]``: their timeline rows into the
    part file ``part``, their claims into this process's winners for ``file``. Returns how many
    events it read and those that could not be folded."""
    count = 0
    failures: list[Failure] = []
    source = job_connection(log)
    out = _part_connection(Path(part))
    try:
        out.execute(timeline_ddl(TIMELINE))
        out.execute(table_ddl(VERSIONS, VERSIONS))
        for rows in scan(source, after, upto):
            timeline: list[TimelineRow] = []
            versions: list[VersionRow] = []
            _reduce(file, timeline, versions, rows, failures, instance)
            out.executemany(_INSERT_TIMELINE, timeline)
            out.executemany(_INSERT_VERSION, versions)
            count += len(rows)
        out.execute("COMMIT")
    finally:
        out.close()
        source.close()
    return count, failures


def take_winners(file: str) -> dict[str, dict[str, Entry]]:
    """(Run in every worker.) This process's winners for ``file``, handed over and forgotten."""
    winners = _winners.pop(file, None)
    return winners.tables if winners is not None else {}


def entity_part(log: str, part: str, winners: Sequence[Winner]) -> tuple[list[str], list[Failure]]:
    """(Run by a worker.) The entity row of each winner, written in the order given into the
    part file ``part``; returns the tables written and the winners whose row could not be
    made."""
    source = job_connection(log)
    out = _part_connection(Path(part))
    failures: list[Failure] = []
    tables: list[str] = []
    try:
        for offset in range(0, len(winners), FETCH_BATCH):
            chunk = winners[offset : offset + FETCH_BATCH]
            positions = sorted(winner[2] for winner in chunk)
            marks = ", ".join("?" * len(positions))
            sql = f"SELECT position, event_id, body FROM events WHERE position IN ({marks})"
            events = {row[0]: row for row in source.execute(sql, positions).fetchall()}
            rows: list[tuple[object, ...]] = []
            table = None
            for name, _, position, deleted, deleted_at in chunk:
                if name != table:
                    _flush(out, table, rows, tables)
                    table, rows = name, []
                try:  # a winner's event belongs to the configured instance: it made a claim
                    event = parse_logged(*events[position])
                    found = claim(event) if event is not None else None
                    if event is not None and found is not None:
                        rows.append(entity_row(found, event, (deleted, deleted_at)))
                except Exception as error:
                    failures.append(failure(position, events[position][1], error))
            _flush(out, table, rows, tables)
        out.execute("COMMIT")
    finally:
        out.close()
        source.close()
    return tables, failures


def _flush(out: sqlite3.Connection, table: str | None, rows: list[tuple[object, ...]],
           tables: list[str]) -> None:  # fmt: skip
    if table is None:
        return
    if table not in tables:
        out.execute(entity_table_ddl(_SPECS[table], table))
        tables.append(table)
    marks = ", ".join("?" * (len(rows[0]) if rows else 0))
    if rows:
        out.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def _copy(conn: sqlite3.Connection, part: Path, tables: Sequence[str]) -> None:
    """Append the rows of ``tables`` in the part file ``part`` to the same tables here, then
    delete the part file."""
    conn.execute("ATTACH DATABASE ? AS part", (str(part),))
    try:
        for table in tables:
            conn.execute(f"INSERT INTO main.{table} SELECT * FROM part.{table}")
    finally:
        conn.execute("DETACH DATABASE part")
    os.unlink(part)


def _batches(items: Iterator[Winner], size: int) -> Iterator[list[Winner]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _chunks(upto: int) -> Iterator[tuple[int, int]]:
    """The log up to ``upto`` as ``(after, upto]`` ranges of :data:`SCAN_BATCH` positions."""
    return ((after, min(after + SCAN_BATCH, upto)) for after in range(0, upto, SCAN_BATCH))


def bulk_connection(file: Path) -> sqlite3.Connection:
    """A connection for filling a new, unpublished file: no journal, no syncs (a crash leaves
    a file nobody reads, deleted by the next rebuild). Each statement commits by itself (part
    files cannot be attached within a transaction); without a journal that costs nothing."""
    conn = connect(file, synchronous="OFF", cache_kib=131_072)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute(f"PRAGMA threads = {SORT_THREADS}")
    return conn


def _timeline(
    conn: sqlite3.Connection, run: Pool, log: str, file: Path, upto: int,
    progress: Progress | None, instance: str | None,
) -> int:  # fmt: skip
    """Fold the log into timeline part files, copying each into ``conn`` in log order."""
    parts = [(after, last, part_path(file, f"t{after}")) for after, last in _chunks(upto)]
    jobs = [(log, str(file), str(part), after, last, instance) for after, last, part in parts]
    count = 0
    for (_, _, part), (folded, failures) in zip(parts, run(fold_part, jobs), strict=True):
        _copy(conn, part, (TIMELINE, VERSIONS))
        record_failures(conn, failures)
        count += folded
        if progress is not None:
            progress(folded)
    return count


def _entities(
    conn: sqlite3.Connection, run: Pool, log: str, file: Path, batches: Iterator[list[Winner]]
) -> None:
    """Write the winners' entity rows through part files, copied in (table, id) order."""
    jobs = ((log, str(part_path(file, f"e{n}")), batch) for n, batch in enumerate(batches))
    numbered = enumerate(run(entity_part, jobs))
    for n, (tables, failures) in numbered:
        _copy(conn, part_path(file, f"e{n}"), tables)
        record_failures(conn, failures)


def _finish(conn: sqlite3.Connection, upto: int) -> None:
    """Indexes, history, search index and checkpoint, in one transaction: in autocommit each
    row that ``derive_all`` inserts would commit by itself, writing its pages out again."""
    conn.execute("BEGIN")
    create_indexes(conn)
    derive_all(conn)
    create_search(conn)
    set_checkpoint(conn, upto)
    conn.execute("COMMIT")


def build(
    log_path: Path,
    file: Path,
    upto: int,
    progress: Progress | None = None,
    workers: int | None = None,
    instance: str | None = None,
) -> int:
    """Create the projections file ``file`` from the log up to ``upto`` for the Clerk instance
    ``instance``; returns the number of events projected. ``workers``: processes that parse
    and fold (None: one per core for a large log, none for a small one)."""
    remove_parts(file)
    conn = bulk_connection(file)
    log, key = str(log_path), str(file)
    try:
        conn.execute("BEGIN")
        create_tables(conn, instance)
        conn.execute("COMMIT")
        with worker_pool(workers_for(upto, workers)) as run:
            count = _timeline(conn, run, log, file, upto, progress, instance)
            winners = Winners()
            for tables in run.each(take_winners, key):
                winners.merge(tables)
            _entities(conn, run, log, file, _batches(winners.ordered(), ENTITY_BATCH))
            del winners
        _finish(conn, upto)
        conn.execute("PRAGMA locking_mode = NORMAL")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
        _winners.pop(key, None)
        remove_parts(file)
    return count
