"""The rebuild benchmark's input: a valid store holding a large generated log, cached.

Rows are written with the store's own schema (:func:`eventstore.db.open_store`), columns
(:data:`eventstore.log.EVENT_COLUMNS`), hashing and time format. Running
:func:`eventstore.log.event_record` (pydantic) on every body would take longer than the whole
benchmark budget, so the rows are built from what the generator knows, and a sample of them
is checked against ``event_record``: any difference stops the generation.

The file is cached in ``bench/work/`` under a name that changes with the generator, the event
count and a fingerprint of the store's schema and row format, so ``make bench`` generates it
once and rebuilds of it can be repeated.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from functools import cache
from multiprocessing import get_context
from pathlib import Path

from bench.bodies import INSTANCE_ID, Renderer
from bench.workload import plan
from eventstore.chain import GENESIS, link
from eventstore.db import open_reader, open_store, transaction
from eventstore.engine import sqlite3
from eventstore.log import EVENT_COLUMNS, event_record, log_position, sha256_hex

GENERATOR_VERSION = 4
SEED = 20260804
CHUNK = 5000
CHECK_EVERY = 997
RECEIVED_T0_MS = 1_785_000_000_000
INSERT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, position, chain) "
    f"VALUES ({', '.join('?' * (2 + len(EVENT_COLUMNS)))})"
)
_ID, _SHA = EVENT_COLUMNS.index("event_id"), EVENT_COLUMNS.index("body_sha256")
Row = tuple[object, ...]
SCHEMA_PRAGMAS = ("journal_mode", "page_size", "application_id")
"""Compared between a fresh store and the generated one, and part of the cache's name: a log
made with another page size (the store's choice for new logs) is not the same log on disk."""


def _iso(ms: int) -> str:
    """:func:`eventstore.timefmt.iso_ms`, faster (the sampled check compares the two)."""
    seconds, millis = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z"


def _received(position: int) -> tuple[str, int]:
    ms = RECEIVED_T0_MS + position * 2_600
    return _iso(ms), ms // 1000


def _rows(job: tuple[int, Sequence[int]]) -> list[Row]:
    """The rows of ``specs``, the first of which will be at log position ``start``."""
    start, specs = job
    renderer = _renderer()
    rows: list[Row] = []
    for position, spec in enumerate(specs, start):
        event = renderer.render(spec, position - 1)
        received_at, svix_timestamp = _received(position)
        row = (
            event.event_id, event.event_type, event.object_type, event.object_id,
            INSTANCE_ID, _iso(event.occurred_ms), received_at,
            svix_timestamp, event.body, sha256_hex(event.body), "ok", None,
        )  # fmt: skip
        if position % CHECK_EVERY == 0:
            _check(row)
        rows.append(row)
    return rows


@cache
def _renderer() -> Renderer:
    """One renderer per (worker) process."""
    return Renderer()


def _check(row: Row) -> None:
    """Stop if the store's own ``event_record`` would not give exactly ``row``."""
    body, received_at, svix_timestamp = row[8], row[6], row[7]
    assert isinstance(body, bytes) and isinstance(received_at, str)
    assert isinstance(svix_timestamp, int)
    record = event_record(
        event_id=str(row[0]), svix_timestamp=svix_timestamp, received_at=received_at, body=body
    )
    expected = tuple(getattr(record, column) for column in EVENT_COLUMNS)
    if expected != row:
        differences = [c for c, a, b in zip(EVENT_COLUMNS, expected, row, strict=True) if a != b]
        raise RuntimeError(f"generated rows differ from event_record in {differences}")


def fingerprint(events: int) -> str:
    """Changes whenever a cached log of ``events`` events would no longer be what we generate."""
    digest = hashlib.sha256(f"{GENERATOR_VERSION}:{events}:{SEED}".encode())
    for spec in plan(50, seed=SEED):
        event = _renderer().render(spec)
        record = event_record(event_id=event.event_id, svix_timestamp=1, received_at="x",
                              body=event.body)  # fmt: skip
        digest.update(repr(tuple(getattr(record, c) for c in EVENT_COLUMNS)).encode())
    digest.update(_schema_sql().encode())
    return digest.hexdigest()[:12]


def _schema_sql(path: Path | None = None) -> str:
    """The schema of the store at ``path`` (of a freshly created store by default)."""
    with tempfile.TemporaryDirectory() as folder:
        conn = open_store(path or Path(folder) / "schema.db", create=path is None)
        try:
            rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")
            pragmas = [conn.execute(f"PRAGMA {name}").fetchone() for name in SCHEMA_PRAGMAS]
            return repr(rows.fetchall()) + repr(pragmas)
        finally:
            conn.close()


def _jobs(specs: list[int]) -> Iterator[tuple[int, list[int]]]:
    for start in range(0, len(specs), CHUNK):
        yield start + 1, specs[start : start + CHUNK]


def _write(path: Path, events: int) -> None:
    """A new store at ``path`` with ``events`` generated events, loaded without a journal and
    with the secondary indexes and insert triggers made at the end (faster, same schema)."""
    conn = open_store(path, create=True, synchronous="OFF")
    deferred = _drop_insert_work(conn)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    _insert_all(conn, events)
    print("  log: indexing", file=sys.stderr)
    for sql in deferred:
        conn.execute(sql)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()


def _drop_insert_work(conn: sqlite3.Connection) -> list[str]:
    """Drop the explicit indexes and the ``BEFORE INSERT`` triggers of ``events`` (none of
    which can fire on rows we know to be new); returns the SQL that creates them again."""
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'events' AND ("
        "(type = 'index' AND sql IS NOT NULL) OR (type = 'trigger' AND sql LIKE '%BEFORE INSERT%'))"
    ).fetchall()
    for kind, name, _sql in rows:
        conn.execute(f'DROP {kind.upper()} "{name}"')
    return [sql for _kind, _name, sql in rows]


def _chained(rows: list[Row], first: int, previous: bytes) -> tuple[list[Row], bytes]:
    """``rows`` with their positions (from ``first``) and chain values, as the writer makes
    them (``eventstore.chain``): a generated log verifies."""
    out: list[Row] = []
    for position, row in enumerate(rows, first):
        previous = link(previous, position, str(row[_ID]), str(row[_SHA]))
        out.append((*row, position, previous.hex()))
    return out, previous


def _insert_all(conn: sqlite3.Connection, events: int) -> None:
    specs = plan(events, seed=SEED)
    written, started, previous = 0, time.monotonic(), GENESIS
    with get_context("fork").Pool(processes=max(1, min(2, os.cpu_count() or 1))) as pool:
        for rows in pool.imap(_rows, _jobs(specs), chunksize=1):
            chained, previous = _chained(rows, written + 1, previous)
            with transaction(conn):
                conn.executemany(INSERT, chained)
            written += len(rows)
            _progress(written, events, started)


def _progress(written: int, events: int, started: float) -> None:
    if written % 100_000 < CHUNK or written == events:
        rate = written / max(time.monotonic() - started, 1e-9)
        print(f"  log: {written:,}/{events:,} events ({rate:,.0f}/s)", file=sys.stderr)


def log_position_of(path: Path) -> int:
    """The last position of the log at ``path``."""
    with closing(open_reader(path)) as conn:
        return log_position(conn)


def cached_log(work: Path, events: int) -> Path | None:
    """The cached log of ``events`` events if it has been generated (None if not)."""
    path = work / f"log-{events}-{fingerprint(events)}.db"
    return path if path.exists() else None


def ensure_log(work: Path, events: int) -> Path:
    """The cached store with a generated log of ``events`` events, generated if missing."""
    path = work / f"log-{events}-{fingerprint(events)}.db"
    if path.exists():
        print(f"  log: cached {path.name}", file=sys.stderr)
        return path
    for stale in work.glob("log-*.db*"):
        stale.unlink()
    partial = path.with_name(path.name + ".partial")
    started = time.monotonic()
    _write(partial, events)
    _check_schema(partial)
    partial.rename(path)
    print(f"  log: generated in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return path


def _check_schema(path: Path) -> None:
    """The generated store has exactly the schema of a fresh one, and no WAL left behind."""
    if _schema_sql(path) != _schema_sql():
        raise RuntimeError(f"{path} does not have the schema of a fresh store")
    for suffix in ("-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            raise RuntimeError(f"{path}{suffix} was left behind")
