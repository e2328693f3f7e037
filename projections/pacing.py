"""Sharing SQLite's write lock with the server while a rebuild writes.

SQLite's lock is not fair: a writer that finds it taken sleeps and retries (its busy handler
waits up to 100 ms between tries), so a rebuild committing one short transaction after
another, with no gap between them, can keep the server's writer out for as long as it runs.
Measured on a million events before this: a probe waited 19.6 s for the lock, and the server
answers 503 after 5 s. A :class:`Pacer` counts how long its transactions held the lock and,
every :data:`HOLD_S` of it, leaves the lock free for :data:`GAP_S`, longer than the busy
handler's longest sleep, so any waiting writer gets its turn. That costs a rebuild at most
``GAP_S / HOLD_S`` (a fifth) of its writing time, and bounds the server's wait to about
``HOLD_S`` plus one transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from eventstore.db import transaction

HOLD_S = 0.5
GAP_S = 0.12


class Pacer:
    """Transactions on ``conn`` that leave room for other writers (see the module doc)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.held = 0.0

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on the pacer's connection, then a pause if due."""
        started = time.monotonic()
        with transaction(self.conn):
            yield self.conn
        self.held += time.monotonic() - started
        if self.held >= HOLD_S:
            time.sleep(GAP_S)
            self.held = 0.0
