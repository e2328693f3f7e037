"""The projector: follows the log by position and keeps the projections file up to date.

Each step reads the events after the projections' checkpoint (at most :data:`BATCH`), applies
them with the ordering rule (``projections.apply``) and writes the new checkpoint, all in one
transaction of the projections file: after a crash it resumes exactly where its last commit
left off, so every event is applied exactly once. The file is written with
``synchronous=NORMAL`` (no fsync per commit): a power cut may lose its last commits, never its
consistency, and it can always be rebuilt from the log.

The log is only read, through a read-only connection. Quarantined events and events that
cannot be projected still move the checkpoint on; the latter are recorded in
``projection_errors`` (the others of their batch are applied regardless). One writer commits
positions in order (``eventstore.writer``), so reading ``position > checkpoint`` never skips
an event that commits late.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from eventstore.db import connect, transaction, translate
from eventstore.engine import sqlite3
from eventstore.errors import StoreError
from eventstore.location import LogLocation, open_log_reader
from eventstore.log import log_position
from eventstore.redaction import REDACTION_TYPE
from projections.apply import apply_events
from projections.failures import Failure, failure, record_failures
from projections.files import create_empty, target
from projections.fold import LoggedEvent, parse_logged
from projections.redactions import (
    PROJECTIONS_SECURE_DELETE,
    erase_replaced,
    listed_positions,
    reproject,
)
from projections.tables import checkpoint, is_current_for, set_checkpoint

log = logging.getLogger("clerk_audit.projector")

BATCH = 5_000
"""Events per transaction: large enough that a commit's cost is spread thin, small enough
that the projections stay a fraction of a second behind the log."""
PROJECTIONS_CACHE_KIB = 65_536
"""Each batch touches every projection table and the timeline's seven indexes."""


_NO_BOUND = 2**63 - 1


class OutOfDate(StoreError):
    """The projections file was built by another version of the code, or for another Clerk
    instance: rebuild it."""


class Projector:
    """Applies the log to the projections file at ``projections_path`` (see module doc), for
    the Clerk instance ``instance`` (``projections.instance``)."""

    def __init__(
        self,
        log_path: LogLocation,
        projections_path: Path,
        *,
        batch: int = BATCH,
        instance: str | None = None,
    ) -> None:
        self.log_path = log_path
        self.projections_path = projections_path
        self.instance = instance
        self._batch = batch
        self._log = open_log_reader(log_path)
        self._conn: sqlite3.Connection | None = None
        self._file: Path | None = None

    @property
    def batch(self) -> int:
        """The most events a step reads."""
        return self._batch

    def close(self) -> None:
        self._log.close()
        self._reopen(None)

    def head(self) -> int:
        """The log's last position."""
        return log_position(self._log)

    def step(self, upto: int | None = None) -> int:
        """Project the next batch (up to position ``upto``); returns how many log positions it
        handled (0: up to date).

        :raises OutOfDate: the projections were built by another version of the code.
        :raises StoreError: either file cannot be read or written now.
        """
        with _without_gc():
            try:
                return self._step(upto, guarded=False)
            except _BatchFailed:  # rolled back: again, each event under a savepoint of its own
                return self._step(upto, guarded=True)

    def _step(self, upto: int | None, guarded: bool) -> int:
        conn = self._connection()
        with transaction(conn, self.projections_path):
            after = checkpoint(conn)
            rows = self._read(after, upto)
            if not rows:
                return 0
            failures: list[Failure] = []
            redactions: list[LoggedEvent] = []
            events = _parse(rows, self.instance, failures, redactions)
            if guarded:
                failures += [f for event in list(events) for f in _apply_guarded(conn, (event,))]
            else:
                _apply_whole(conn, events)
            if redacted := listed_positions(redactions):  # a redaction: its events, redacted
                failures += reproject(conn, self._log, redacted, self.instance)
            record_failures(conn, failures)
            set_checkpoint(conn, rows[-1][0])
        if redacted:
            erase_replaced(conn)
        return len(rows)

    def run(self, upto: int | None = None) -> int:
        """Step until the projections reach ``upto`` (default: the log's head now); returns
        how many positions were handled."""
        goal = self.head() if upto is None else upto
        total = 0
        while handled := self.step(goal):
            total += handled
        return total

    def _read(self, after: int, upto: int | None) -> list[tuple[int, str, bytes, str]]:
        last = _NO_BOUND if upto is None else upto  # no look-up of the head: read what is there
        try:
            return self._log.execute(
                "SELECT position, event_id, body, status FROM events "
                "WHERE position > ? AND position <= ? ORDER BY position LIMIT ?",
                (after, last, self._batch),
            ).fetchall()
        except sqlite3.Error as error:
            raise translate(error, str(self.log_path)) from error

    def _connection(self) -> sqlite3.Connection:
        """The write connection to the current generation, (re)opened when a rebuild has
        published a new one, or created when there is none."""
        current = target(self.projections_path)
        if current is None:
            create_empty(self.projections_path, self.instance)
            current = target(self.projections_path)
        if self._conn is None or current != self._file:
            self._reopen(current)
        assert self._conn is not None
        return self._conn

    def _reopen(self, file: Path | None) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._file = None, None
        if file is None:
            return
        conn = connect(file, synchronous="NORMAL", cache_kib=PROJECTIONS_CACHE_KIB)
        conn.execute(f"PRAGMA secure_delete = {PROJECTIONS_SECURE_DELETE}")
        if not is_current_for(conn, self.instance):
            conn.close()
            raise OutOfDate(f"{self.projections_path} was built by another version of "
                            "clerk-audit or for another instance: rebuild it")  # fmt: skip
        self._conn, self._file = conn, file


@contextmanager
def _without_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a step: a batch allocates a parsed body and rows
    per event, none of them cyclic, and collections walking them took a tenth of its time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse(
    rows: Sequence[tuple[int, str, bytes, str]],
    instance: str | None,
    failures: list[Failure],
    redactions: list[LoggedEvent],
) -> Iterator[LoggedEvent]:
    """The projectable events of ``rows`` (quarantined ones are skipped), parsed as they are
    applied: a batch never holds every parsed body at once. Adds the events that cannot be
    parsed to ``failures`` and the redaction events to ``redactions``."""
    for position, event_id, body, status in rows:
        if status != "ok":
            continue
        try:
            event = parse_logged(position, event_id, body, instance=instance)
        except Exception as error:  # the log's parse accepted it: this is our bug
            failures.append(failure(position, event_id, error))
            continue
        if event is None:
            failures.append((position, event_id, "the stored body is not an event"))
            continue
        if event.event_type == REDACTION_TYPE:
            redactions.append(event)
        yield event


class _BatchFailed(Exception):
    """Applying a batch raised (not the store failing): the batch is applied again, each
    event on its own, so only the events that fail are left out."""


def _apply_whole(conn: sqlite3.Connection, events: Iterable[LoggedEvent]) -> None:
    """Apply ``events`` with no savepoint (each would copy every page the batch changes
    into a statement journal); raises :class:`_BatchFailed` if that raises (other than the
    store failing)."""
    try:
        apply_events(conn, events)
    except Exception as error:
        if isinstance(error, sqlite3.Error) and type(translate(error)) is not StoreError:
            raise  # the file is failing (full, locked, read-only): the batch waits
        raise _BatchFailed from error


def _apply_guarded(conn: sqlite3.Connection, events: Sequence[LoggedEvent]) -> list[Failure]:
    """Apply ``events``; if that raises (other than the store failing), undo and apply them
    one by one, so only the events that fail are left out. Returns those failures."""
    conn.execute("SAVEPOINT batch")
    try:
        apply_events(conn, events)
        failures: list[Failure] = []
    except Exception as error:
        if isinstance(error, sqlite3.Error) and type(translate(error)) is not StoreError:
            raise  # the file is failing (full, locked, read-only): the batch waits
        conn.execute("ROLLBACK TO batch")
        if len(events) == 1:
            failures = [failure(events[0].position, events[0].event_id, error)]
        else:
            failures = [f for event in events for f in _apply_guarded(conn, (event,))]
    conn.execute("RELEASE batch")
    return failures
