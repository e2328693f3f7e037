"""Filling a new projections file from the log, as fast as it goes (a rebuild's first part).

Nobody reads the file until it is published (``projections.files``), so it is written with no
journal and no syncs, and indexed after the load.

1. The log up to ``upto`` is folded chunk by chunk (:func:`fold_part`), in worker processes for
   a large log (``projections.workers``). A worker writes each chunk's timeline and version
   rows into a small *part file* of its own, with the chunk's best claim per entity (its
   *candidate*, with the entity row it would write, made from the event already parsed) and
   every claim that deletes an entity. The rebuilding process copies each part file as it is
   done, in log order (``INSERT ... SELECT``: rows cross between processes as SQLite pages,
   never pickled), the timeline into the new file and the rest into a *stage* file, then
   deletes it.
2. Each entity's winner is its best candidate (``projections.winners``), deleted if any of its
   claims deletes it; the winners' rows are copied from the stage file in (table, id) order,
   so each table's primary key is appended to, never inserted into at random. No event is
   read or parsed twice, and no process holds a record per entity.
3. While the workers derive the history from the staged versions (``projections.shards``),
   the versions are sorted into their table and the other indexes made; then the history is
   merged, and the search index made.

Part files are named after the new file (``<file>.part-...``) and deleted with it
(:func:`remove_parts`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventstore.db import connect
from eventstore.engine import sqlite3
from projections.entities import COMMON_COLUMNS, SPECS
from projections.failures import Failure, failure, record_failures
from projections.fold import (
    Claim,
    ClaimKey,
    EntityRow,
    LoggedEvent,
    TimelineRow,
    claim,
    entity_row,
    parse_logged,
    timeline_row,
    version_row,
)
from projections.history import VERSIONS
from projections.schema import (
    HISTORY_DDL,
    HISTORY_ORDER,
    INDEXES,
    TIMELINE,
    TIMELINE_COLUMNS,
    VIEWS,
    index_ddl,
    timeline_ddl,
    view_ddl,
)
from projections.shards import derive_part, merge_history, staged_versions
from projections.tables import create_search, create_tables, set_checkpoint
from projections.winners import winners
from projections.workers import (
    Pool,
    job_connection,
    part_connection,
    part_page_size,
    worker_pool,
    workers_for,
)

Progress = Callable[[int], None]
"""Told how many more events were read."""

SCAN_BATCH = 20_000
"""Events per chunk (a part file each)."""
FETCH_BATCH = 1_000
"""Events a worker reads (and holds parsed) at a time."""
SORT_THREADS = 1
"""``PRAGMA threads`` for the index builds and sorts: one helper thread, for the second core
(each sorter thread may hold up to the cache size in memory)."""
REBUILD_CACHE_KIB = 32_768
"""The rebuilding process's page cache. An index build's sort holds up to this much per
thread besides, so the process peaks near three times it; the rebuild's memory target (all
processes under 500 MB) allows 32 MiB (bench/analysis.md)."""

_SPECS = {spec.table: spec for spec in SPECS}
_INSERT_TIMELINE = (
    f"INSERT INTO {TIMELINE} ({', '.join(TIMELINE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(TIMELINE_COLUMNS))})"
)
_SUMMARY = TIMELINE_COLUMNS.index("summary")
Folded = tuple[int, list[str], list[Failure], list[Failure]]
"""What :func:`fold_part` returns."""
_STAGED_VERSIONS = f"v_{VERSIONS}"
"""Version rows as the workers make them (in log order), in part files and the stage file."""
_VERSION_COLUMNS = f"{HISTORY_ORDER[VERSIONS]}, action, occurred_at, fields, summary"
_INSERT_VERSION = f"INSERT INTO {_STAGED_VERSIONS} VALUES ({', '.join('?' * 10)})"
_CANDIDATE = "c_"
"""The prefix of candidate entity tables (in part files and the stage file)."""
_STAGE = "stage"
_DELETES = "deletes"
"""In part files and the stage file: ``(table, entity id, deleted_at)`` of each delete."""


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


@dataclass(slots=True)
class _Chunk:
    """What folding one chunk of the log makes, before it is written to its part file."""

    timeline: list[TimelineRow] = field(default_factory=list)
    versions: list[tuple[Any, ...]] = field(default_factory=list)
    """Version rows with their event's position (``projections.shards``)."""
    failures: list[Failure] = field(default_factory=list)
    best: dict[tuple[str, str], tuple[ClaimKey, tuple[Any, ...]]] = field(default_factory=dict)
    """Per ``(table, entity id)``, the chunk's best claim (its candidate): its key, and its
    event's position, ``full`` and entity row, as written into the part file."""
    deletes: list[tuple[str, str, str | None]] = field(default_factory=list)
    """``(table, entity id, deleted_at)`` of every claim that deletes its entity."""
    unmade: list[Failure] = field(default_factory=list)
    """Candidates whose entity row could not be made (a failure if one wins)."""

    def offer(self, found: Claim, event: LoggedEvent) -> None:
        """Keep ``found`` if it is its entity's best claim in the chunk so far."""
        entity = (found.spec.table, found.entity_id)
        if found.is_delete:
            self.deletes.append((*entity, found.deleted_at))
        best = self.best.get(entity)
        if best is not None and best[0] > found.key:
            return
        try:
            row = entity_row(found, event)
        except Exception as error:
            self.unmade.append(failure(event.position, event.event_id, error))
            row = _unmade_row(found)
        self.best[entity] = (found.key, (event.position, found.key[0], *row))


def _unmade_row(found: Claim) -> EntityRow:
    """A candidate's row when its entity row could not be made: its id and key only."""
    _, version, rank, event_id = found.key
    empty = [None] * (len(found.spec.columns) + len(COMMON_COLUMNS) - 3)
    return (found.entity_id, *empty, event_id, version, rank)


def _reduce(out: _Chunk, rows: list[tuple[int, str, bytes]], instance: str | None) -> None:
    for position, event_id, body in rows:
        try:
            event = parse_logged(position, event_id, body, instance=instance)
            if event is None:
                raise ValueError("the stored body is not an event")
            row = timeline_row(event)
            found = claim(event)
            version = version_row(found, event, row[_SUMMARY]) if found is not None else None
        except Exception as error:
            out.failures.append(failure(position, event_id, error))
            continue
        out.timeline.append(row)
        if version is not None:
            out.versions.append((*version, position))
        if found is not None:
            out.offer(found, event)


def _candidate_ddl(table: str, schema: str = "") -> str:
    """A table of candidate entity rows: their event's position, whether the claim is full,
    then the entity table's columns (untyped: the entity table gives them their affinity when
    they are copied)."""
    spec = _SPECS[table]
    names = ", ".join(("id", *spec.column_names, *COMMON_COLUMNS))
    return f"CREATE TABLE {schema}{_CANDIDATE}{table} (position INTEGER PRIMARY KEY, full, {names})"


def _write_candidates(out: sqlite3.Connection, chunk: _Chunk) -> list[str]:
    """Write the chunk's candidates and deletes into ``out``; returns their tables."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for (table, _), (_, row) in chunk.best.items():
        tables.setdefault(table, []).append(row)
    for table, rows in tables.items():
        rows.sort()
        out.execute(_candidate_ddl(table))
        marks = ", ".join("?" * len(rows[0]))
        out.executemany(f"INSERT INTO {_CANDIDATE}{table} VALUES ({marks})", rows)
    out.execute(f"CREATE TABLE {_DELETES} (entity, id, deleted_at)")
    out.executemany(f"INSERT INTO {_DELETES} VALUES (?, ?, ?)", chunk.deletes)
    return [*(_CANDIDATE + table for table in tables), _DELETES]


def fold_part(log: str, part: str, after: int, upto: int, instance: str | None = None) -> Folded:
    """(Run by a worker.) Fold the events in ``(after, upto]`` into the part file ``part``:
    their timeline and version rows, the chunk's candidate entity rows and its deletes.
    Returns how many events it read, the tables of the part file, those events that could
    not be folded and the candidates whose row could not be made."""
    chunk = _Chunk()
    source = job_connection(log)
    out = part_connection(Path(part), upto - after)
    count = 0
    try:
        out.execute(timeline_ddl(TIMELINE))
        out.execute(staged_versions("", _STAGED_VERSIONS))
        for rows in scan(source, after, upto):
            _reduce(chunk, rows, instance)
            out.executemany(_INSERT_TIMELINE, chunk.timeline)
            out.executemany(_INSERT_VERSION, chunk.versions)
            chunk.timeline, chunk.versions = [], []
            count += len(rows)
        tables = [TIMELINE, _STAGED_VERSIONS, *_write_candidates(out, chunk)]
        out.execute("COMMIT")
    finally:
        out.close()
        source.close()
    return count, tables, chunk.failures, chunk.unmade


def _copy(conn: sqlite3.Connection, part: Path, tables: Sequence[str]) -> None:
    """Append the rows of ``tables`` in the part file ``part`` to the same tables here (all but
    the timeline's in the stage file), then delete the part file."""
    conn.execute("ATTACH DATABASE ? AS part", (str(part),))
    try:
        for table in tables:
            schema = "main" if table == TIMELINE else _STAGE
            conn.execute(f"INSERT INTO {schema}.{table} SELECT * FROM part.{table}")
    finally:
        conn.execute("DETACH DATABASE part")
    os.unlink(part)


def _chunks(upto: int) -> Iterator[tuple[int, int]]:
    """The log up to ``upto`` as ``(after, upto]`` ranges of :data:`SCAN_BATCH` positions."""
    return ((after, min(after + SCAN_BATCH, upto)) for after in range(0, upto, SCAN_BATCH))


def bulk_connection(file: Path) -> sqlite3.Connection:
    """A connection for filling a new, unpublished file: no journal, no syncs (a crash leaves
    a file nobody reads, deleted by the next rebuild). Each statement commits by itself (part
    files cannot be attached within a transaction); without a journal that costs nothing."""
    conn = connect(file, synchronous="OFF", cache_kib=REBUILD_CACHE_KIB)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute(f"PRAGMA threads = {SORT_THREADS}")
    return conn


def _timeline(
    conn: sqlite3.Connection, run: Pool, log: str, file: Path, upto: int,
    progress: Progress | None, instance: str | None,
) -> tuple[int, dict[int, Failure]]:  # fmt: skip
    """Fold the log into part files, copying each into ``conn`` in log order; returns the
    events read and the candidates whose entity row could not be made, by position."""
    parts = [(after, last, part_path(file, f"t{after}")) for after, last in _chunks(upto)]
    jobs = [(log, str(part), after, last, instance) for after, last, part in parts]
    count, unmade = 0, dict[int, Failure]()
    for (_, _, part), (folded, tables, failures, bad) in zip(
        parts, run(fold_part, jobs), strict=True
    ):
        _copy(conn, part, tables)
        record_failures(conn, failures)
        unmade.update((f[0], f) for f in bad)
        count += folded
        if progress is not None:
            progress(folded)
    return count, unmade


def _stage(conn: sqlite3.Connection, file: Path, upto: int) -> None:
    """Attach the stage file, which collects every part file's candidate entity rows."""
    conn.execute("ATTACH DATABASE ? AS stage", (str(part_path(file, _STAGE)),))
    pragmas = (f"page_size = {part_page_size(upto)}", "journal_mode = OFF", "synchronous = OFF")
    for pragma in pragmas:
        conn.execute(f"PRAGMA {_STAGE}.{pragma}")
    conn.execute("BEGIN")
    for table in _SPECS:
        conn.execute(_candidate_ddl(table, f"{_STAGE}."))
    conn.execute(staged_versions(f"{_STAGE}.", _STAGED_VERSIONS))
    conn.execute(f"CREATE TABLE {_STAGE}.{_DELETES} (entity, id, deleted_at)")
    conn.execute("COMMIT")


def _entity_select(table: str) -> str:
    """The winners' rows of ``table``, from their candidates, in the order of ``temp.won``."""
    spec = _SPECS[table]
    columns = ("id", *spec.column_names, *COMMON_COLUMNS)
    chosen = ", ".join(f"w.{c}" if c in ("deleted", "deleted_at") else f"c.{c}" for c in columns)
    return (
        f"INSERT INTO main.{table} SELECT {chosen} FROM temp.won AS w "
        f"CROSS JOIN {_STAGE}.{_CANDIDATE}{table} AS c ON c.position = w.position "
        "ORDER BY w.rowid"
    )


def _entities(conn: sqlite3.Connection, unmade: dict[int, Failure]) -> None:
    """Write each entity's winning row (``projections.winners``), from the stage file, in
    (table, id) order (appending to the tables' primary keys)."""
    conn.execute("BEGIN")
    conn.execute("CREATE TEMP TABLE won (position INTEGER, deleted INTEGER, deleted_at TEXT)")
    for table in sorted(_SPECS):
        candidates = conn.execute(
            "SELECT id, full, version_ms, version_rank, event_id, position "
            f"FROM {_STAGE}.{_CANDIDATE}{table} ORDER BY id"
        )
        won = list(winners(candidates, _deletes(conn, table)))
        record_failures(conn, [unmade[w[0]] for w in won if w[0] in unmade])
        conn.executemany("INSERT INTO temp.won VALUES (?, ?, ?)",
                         [w for w in won if w[0] not in unmade])  # fmt: skip
        conn.execute(_entity_select(table))
        conn.execute("DELETE FROM temp.won")
    conn.execute("DROP TABLE temp.won")
    conn.execute("COMMIT")


def _deletes(conn: sqlite3.Connection, table: str) -> dict[str, str | None]:
    """The earliest delete time of each deleted entity of ``table``."""
    sql = f"SELECT id, min(deleted_at) FROM {_STAGE}.{_DELETES} WHERE entity = ? GROUP BY id"
    return dict(conn.execute(sql, (table,)).fetchall())


def _derive(run: Pool, file: Path, upto: int) -> Callable[[], list[Path]]:
    """Start deriving the history from the staged versions, a shard per worker; returns a
    function that waits for the part files."""
    shards = max(1, run.workers)
    parts = [part_path(file, f"h{shard}") for shard in range(shards)]
    stage = str(part_path(file, _STAGE))
    jobs = [(stage, _STAGED_VERSIONS, str(p), n, shards, upto // shards)
            for n, p in enumerate(parts)]  # fmt: skip
    wait = run.start(derive_part, jobs)
    return lambda: [parts[n] for n, _ in enumerate(wait())]


def _indexes(conn: sqlite3.Connection, history: bool) -> None:
    """The indexes of the history tables, or of all the others."""
    for index in INDEXES:
        if (index.table in HISTORY_DDL) == history:
            conn.execute(index_ddl(index))


def _load(conn: sqlite3.Connection) -> None:
    """The version rows, sorted by their key (appended to it, never inserted at random), then
    the indexes of the timeline and the entity tables."""
    conn.execute("BEGIN")
    conn.execute(
        f"INSERT INTO main.{VERSIONS} SELECT {_VERSION_COLUMNS} FROM {_STAGE}.{_STAGED_VERSIONS} "
        f"ORDER BY {HISTORY_ORDER[VERSIONS]}"
    )
    _indexes(conn, history=False)
    conn.execute("COMMIT")


def _finish(conn: sqlite3.Connection, upto: int) -> None:
    """The history's indexes, the views, the search index and the checkpoint."""
    conn.execute("BEGIN")
    _indexes(conn, history=True)
    for view in VIEWS:
        conn.execute(view_ddl(view))
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
    log = str(log_path)
    try:
        conn.execute("BEGIN")
        create_tables(conn, instance)
        conn.execute("COMMIT")
        _stage(conn, file, upto)
        processes = workers_for(upto, workers)
        with worker_pool(processes) as run:
            count, unmade = _timeline(conn, run, log, file, upto, progress, instance)
        _entities(conn, unmade)
        # New workers: the fold's leave 100 MB or more each of freed but still resident
        # memory behind them (Python keeps its arenas), and the derivation needs little.
        with worker_pool(processes) as run:
            derived = _derive(run, file, upto)
            _load(conn)
            parts = derived()
        conn.execute(f"DETACH DATABASE {_STAGE}")
        merge_history(conn, parts)
        _finish(conn, upto)
        conn.execute("PRAGMA locking_mode = NORMAL")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
        remove_parts(file)
    return count
