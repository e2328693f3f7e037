"""Rebuilding the projections: the projector from position 0 into a new file, then one swap.

1. Note the log's head and fill a new generation file with the log up to it, at full speed
   (``projections.bulk``: no journal, no syncs, indexes after the load, bodies parsed on every
   core). Nothing shares a lock with the server: the log is only read.
2. Catch the new file up with the events appended meanwhile (``projections.projector``).
3. Read its digests, then publish it (``projections.files``): readers and the server's
   projector see the old projections until then and the new ones after it, without a restart.

``check`` builds aside up to the live projections' checkpoint, catches up to wherever they
are within one read transaction of theirs, compares both at that same position and deletes
the file it built.
"""

from __future__ import annotations

import fcntl
import gc
import os
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from eventstore.db import open_reader, translate
from eventstore.engine import sqlite3
from eventstore.errors import ConfigurationError
from eventstore.location import LogLocation, open_log_reader
from eventstore.log import log_position
from projections.bulk import build, remove_parts
from projections.digest import digests_in_workers, state_digest, table_digests
from projections.files import generations, next_generation, publish, remove, target
from projections.projector import Projector
from projections.tables import checkpoint, is_current_for, row_counts
from projections.workers import workers_for

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class RebuildResult:
    events: int
    """Log positions handled (quarantined events included: they are in the log, projected
    nowhere)."""
    position: int
    """The log position the projections reflect."""
    rows: dict[str, int]
    digests: dict[str, str]
    differences: tuple[str, ...] = field(default=())
    """With ``check``: the tables whose live contents differ from a rebuild."""

    @property
    def digest(self) -> str:
        return state_digest(self.digests)


@contextmanager
def _without_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: a rebuild keeps a record per entity alive, and each
    collection would walk them all again (nothing a rebuild makes is cyclic)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def rebuild(
    log_path: LogLocation,
    projections_path: Path,
    *,
    check: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
    instance: str | None = None,
) -> RebuildResult:
    """Rebuild (or with ``check``, rebuild aside and compare) the projections of the log.

    :param workers: processes that parse and fold the log (0: none; None: one per core when
        the log is large, see ``projections.workers.workers_for``).
    :param instance: the configured Clerk instance (``projections.instance``): the
        projections are built for it, and with ``check`` the live ones must have been too.
    """
    job = _Job(progress, workers, instance)
    with _rebuilding(projections_path):
        _remove_unpublished(projections_path)
        new = next_generation(projections_path)
        try:
            with _without_gc():
                if check:
                    return _check(log_path, projections_path, new, job)
                return _replace(log_path, projections_path, new, job)
        except BaseException as error:
            remove(new)
            remove_parts(new)
            if isinstance(error, sqlite3.Error):  # e.g. a full disk: one line, not a traceback
                raise translate(error, new) from error
            raise


@contextmanager
def _rebuilding(projections_path: Path) -> Iterator[None]:
    """Hold the rebuild lock of ``projections_path`` (a lock file beside it, released by the
    kernel if the process dies): one rebuild at a time, so that each may delete what a stopped
    one left behind."""
    lock = projections_path.with_name(f".{projections_path.name}.rebuild-lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ConfigurationError(f"cannot create {lock}: {error.strerror}") from error
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(
                f"another rebuild of {projections_path} is running; wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)


def _remove_unpublished(projections_path: Path) -> None:
    """Delete the generations a stopped rebuild left (every one but the published one), and
    their part files."""
    current = target(projections_path)
    for file in generations(projections_path).values():
        if file.resolve() != current:
            remove(file)
            remove_parts(file)


def _head(log_path: LogLocation) -> int:
    with closing(open_log_reader(log_path)) as conn:
        return log_position(conn)


@dataclass(frozen=True, slots=True)
class _Job:
    progress: Progress | None
    workers: int | None
    instance: str | None


def _bulk_upto(log_path: LogLocation, upto: int) -> int:
    """How far the bulk build reads the log: ``upto``, or nothing for a PostgreSQL log (its
    readers are SQLite's; the projector then applies the whole log)."""
    return upto if isinstance(log_path, Path) else 0


def _replace(log_path: LogLocation, path: Path, new: Path, job: _Job) -> RebuildResult:
    upto = _bulk_upto(log_path, _head(log_path))
    workers = job.workers if upto else 0
    count = build(_sqlite(log_path), new, upto, job.progress, workers, job.instance)
    projector = Projector(log_path, new, instance=job.instance)
    try:
        count += projector.run()
    finally:
        projector.close()
    result = _result(new, count, workers_for(count, job.workers))
    publish(path, new)
    return result


def _result(file: Path, count: int, workers: int) -> RebuildResult:
    digests = digests_in_workers(file, workers) if workers > 1 else None
    with closing(open_reader(file)) as conn:
        conn.execute("BEGIN")
        rows, position = row_counts(conn), checkpoint(conn)
        return RebuildResult(count, position, rows, digests or table_digests(conn))


def _check(log_path: LogLocation, path: Path, new: Path, job: _Job) -> RebuildResult:
    live_file = target(path)
    if live_file is None:
        raise ConfigurationError(f"no projections at {path} to check (run `clerk-audit project`)")
    with closing(open_reader(live_file)) as live:
        live.execute("BEGIN")  # one snapshot of the live projections for the whole check
        if not is_current_for(live, job.instance):
            raise ConfigurationError(
                f"{path} was built by another version or for another instance "
                "(CLERK_AUDIT_INSTANCE_ID): rebuild it"
            )
        at = checkpoint(live)
        upto = _bulk_upto(log_path, at)
        count = build(_sqlite(log_path), new, upto, job.progress, job.workers, job.instance)
        if not isinstance(log_path, Path):
            count += _catch_up(log_path, new, at, job.instance)
        result = _result(new, count, 0)
        live_digests = table_digests(live)
    remove(new)
    differences = tuple(t for t, d in result.digests.items() if live_digests[t] != d)
    return RebuildResult(count, at, result.rows, result.digests, differences)


def ensure_current(
    log_path: LogLocation, projections_path: Path, instance: str | None = None
) -> bool:
    """Rebuild the projections if they were built by another version of the code or for
    another Clerk instance than ``instance`` (or are missing while the log is not empty);
    returns whether it rebuilt."""
    live_file = target(projections_path)
    if live_file is not None:
        with closing(sqlite3.connect(live_file)) as conn:
            if is_current_for(conn, instance):
                return False
    elif _head(log_path) == 0:
        return False
    rebuild(log_path, projections_path, instance=instance)
    return True


def _sqlite(log_path: LogLocation) -> Path:
    """The path the bulk build is given (unread for a PostgreSQL log, see :func:`_bulk_upto`)."""
    return log_path if isinstance(log_path, Path) else Path("/nonexistent")


def _catch_up(log_path: LogLocation, file: Path, upto: int, instance: str | None) -> int:
    projector = Projector(log_path, file, instance=instance)
    try:
        return projector.run(upto)
    finally:
        projector.close()
