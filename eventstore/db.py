"""Opening the SQLite store, its pragmas, and the one place SQLite errors are translated."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from sqlite_utils import Database

from eventstore.engine import sqlite3
from eventstore.errors import ConfigurationError, StoreCorrupt, StoreError, StoreUnavailable
from eventstore.schema import APPLICATION_ID, log_migrations

BUSY_TIMEOUT_MS = 5000
WRITER_CACHE_KIB = 16_384
"""The server's writer's page cache (SQLite's default is 2 MiB), so the pages of the log's
B-trees that every append touches stay in memory."""

LOG_PAGE_SIZE = 16_384
"""The page size of a new log. Bodies are 2-3 KB: with SQLite's default 4 KiB pages most of a
page is left empty around each one (the one-file store took 1.7 bytes per body byte); at
16 KiB a page holds several. See bench/analysis.md."""

BULK_CACHE_KIB = 131_072
"""The page cache of a bulk append (``import``): the ``event_id`` index of a million events
(about 60 MB) stays in memory, so random inserts into it do not spill pages to disk."""

SECURE_DELETE = "FAST"
"""Zero removed bytes where that costs no extra I/O: inside pages, not freed pages. A page that
splits or a row rewritten would otherwise leave copies of old bytes in the page's free space,
beyond the reach of a redaction (``clerk-audit redact`` turns it fully on for its own
transaction). Debian's SQLite defaults to ON, which zeroes every freed page and made dropping
the old layout's projection tables from a large log rewrite them whole through the WAL."""


def translate(error: sqlite3.Error, path: Path | str = "the store") -> StoreError:
    """Our error for a ``sqlite3`` error: locked, full, read-only and I/O errors are
    :class:`StoreUnavailable` (retry later), a damaged file is :class:`StoreCorrupt`."""
    name = getattr(error, "sqlite_errorname", "") or ""
    text = str(error)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return _failed(StoreUnavailable, path, "is locked by another writer", text)
    if name.startswith("SQLITE_FULL") or "full" in text:
        return _failed(StoreUnavailable, path, "cannot grow: the disk is full", text)
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return _failed(StoreUnavailable, path, "is read-only", text)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "not a database" in text:
        return _failed(StoreCorrupt, path, "is not a readable SQLite database", text)
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        return _failed(StoreUnavailable, path, "could not be read or written (I/O error)", text)
    return _failed(StoreError, path, "failed", text)


def _failed(kind: type[StoreError], path: Path | str, problem: str, text: str) -> StoreError:
    """``kind`` naming ``path`` for the operator, and only "the store" for HTTP clients."""
    return kind(f"{path} {problem} ({text})", public=f"the store {problem}")


def connect(
    path: Path,
    *,
    synchronous: str = "FULL",
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    cache_kib: int | None = None,
    temp_in_memory: bool = False,
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with our pragmas.

    :param busy_timeout_ms: how long a write waits for another writer's lock before the store
        counts as unavailable.
    :param cache_kib: the page cache, if not SQLite's default (2 MiB).
    :param temp_in_memory: keep SQLite's temporary files in memory (``temp_store``), for
        the server's writer. Every statement under a savepoint, and every insert into a table
        with a trigger, keeps the pages it changes in a statement journal, which SQLite spills
        to a temporary file past 64 KiB: a writer's batch did, a write system call per page.
        Measured on batches of 16 events: 385 -> 303 us of writer CPU per event. Its journals
        hold one group's pages at most; a rebuild's index builds (sorts of a million rows)
        keep using files.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA secure_delete = {SECURE_DELETE}")
        if cache_kib is not None:
            conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        if temp_in_memory:
            conn.execute("PRAGMA temp_store = MEMORY")
        return conn
    except sqlite3.Error as error:
        raise translate(error, path) from error


def _is_empty(conn: sqlite3.Connection) -> bool:
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    return int(pages) <= 1


def _check_application(conn: sqlite3.Connection, path: Path) -> None:
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if app_id == APPLICATION_ID:
        return
    if app_id == 0 and tables == 0:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        return
    raise StoreCorrupt(f"{path} is a SQLite database but not a clerk-audit store")


def open_store(
    path: Path, *, create: bool = False, synchronous: str = "FULL"
) -> sqlite3.Connection:
    """Open (and with ``create``, create) the store at ``path``, in WAL mode, migrated.

    :raises ConfigurationError: the file or its folder does not exist (and may not be created).
    :raises StoreCorrupt: the file is not a clerk-audit SQLite database.
    :raises StoreUnavailable: it cannot be opened or written now.
    """
    if not path.parent.is_dir():
        raise ConfigurationError(f"database folder {path.parent} does not exist")
    if not create and not path.exists():
        raise ConfigurationError(f"no store at {path} (start the server once to create it)")
    conn = connect(path, synchronous=synchronous)
    try:
        if _is_empty(conn):  # before anything writes the first page, which fixes the size
            conn.execute(f"PRAGMA page_size = {LOG_PAGE_SIZE}")
        _check_application(conn, path)
        conn.execute("PRAGMA journal_mode = WAL")
        log_migrations.apply(Database(conn))
    except sqlite3.Error as error:
        conn.close()
        raise translate(error, path) from error
    except StoreError:
        conn.close()
        raise
    return conn


def open_reader(path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """A read-only connection to an existing SQLite file (``mode=ro``): the projector's view of
    the log, which it must never write.

    :raises ConfigurationError: there is no file at ``path``.
    """
    if not path.exists():
        raise ConfigurationError(f"no store at {path} (start the server once to create it)")
    _roll_back_hot_journal(path, busy_timeout_ms)
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
            check_same_thread=False,
        )  # fmt: skip
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        return conn
    except sqlite3.Error as error:
        raise translate(error, path) from error


def _roll_back_hot_journal(path: Path, busy_timeout_ms: int) -> None:
    """Let SQLite roll back the journal of a writer killed mid-transaction (an import writes
    through a rollback journal when it has the log alone: :func:`bulk_appends`), which a
    read-only connection cannot do: it would fail on its first read. A connection that may
    write does it on its first read; a journal still in use is left to its writer."""
    journal = path.with_name(path.name + "-journal")
    if not journal.exists() or journal.stat().st_size == 0:
        return
    with contextlib.suppress(sqlite3.Error), closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


def probe_writable(conn: sqlite3.Connection, path: Path) -> None:
    """Commit a write that changes nothing (the application id, set to itself), so a store that
    can be read but not written fails now instead of on every delivery.

    SQLite opens a file it may not write read-only without saying so, and reads need no write:
    only a committed write shows that the file, its folder (for the WAL) and the disk all work.

    :raises StoreUnavailable: the store cannot be written (read-only file or folder, disk full).
    """
    with transaction(conn, path):
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


@contextmanager
def transaction(conn: sqlite3.Connection, path: Path | str = "the store") -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back whole on any error, and SQLite errors
    are raised as our own (see :func:`translate`)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as error:
        raise translate(error, path) from error
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(error, sqlite3.Error):
            raise translate(error, path) from error
        raise


@contextmanager
def bulk_appends(conn: sqlite3.Connection, path: Path) -> Iterator[None]:
    """Pragmas for appending many events on ``conn``, a connection of its own (``import``).

    A page cache of :data:`BULK_CACHE_KIB`, statement journals in memory (each multi-row
    insert into ``events`` keeps one: see :func:`connect`), and, when no other connection has
    the log open, a rollback journal instead of the WAL for the time of the appends: the pages
    an append adds are then written once, not twice (into the WAL, then into the file by the
    checkpoint). Commits stay durable (``synchronous=FULL``). The WAL comes back at the end; a
    server started meanwhile switches it back as it opens the log (``open_store``), and the
    appends go on in the WAL.
    """
    conn.execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
    conn.execute("PRAGMA temp_store = MEMORY")
    alone = _switch_journal(conn, "DELETE", wait_ms=0)
    try:
        yield
    finally:
        if alone:  # should a reader hold it past the timeout, open_store sets WAL again
            _switch_journal(conn, "WAL", wait_ms=BUSY_TIMEOUT_MS)


def _switch_journal(conn: sqlite3.Connection, mode: str, wait_ms: int) -> bool:
    """Set the journal mode; False when it cannot be done now (leaving WAL needs the log
    alone: it fails at once when another connection has it open)."""
    conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
    try:
        (found,) = conn.execute(f"PRAGMA journal_mode = {mode}").fetchone()
        return str(found).upper() == mode
    except sqlite3.OperationalError:
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
