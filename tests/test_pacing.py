"""A rebuild's back-to-back transactions leave SQLite's write lock to a waiting writer."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from eventstore.db import open_store
from projections.pacing import Pacer

WAITER_TIMEOUT_S = 2.0
BUSY_FOR_S = 4.0


def _wait_for_the_lock(db_path: Path, got_in: threading.Event, failed: list[str]) -> None:
    conn = sqlite3.connect(db_path, timeout=WAITER_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        got_in.set()
    except sqlite3.OperationalError as error:
        failed.append(str(error))
    finally:
        conn.close()


def test_a_waiting_writer_gets_in_between_paced_transactions(db_path: Path) -> None:
    conn = open_store(db_path, create=True)
    conn.execute("CREATE TABLE work (n INTEGER)")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # no checkpoint pauses between commits
    pacer, got_in, failed = Pacer(conn), threading.Event(), []
    waiter = threading.Thread(target=_wait_for_the_lock, args=(db_path, got_in, failed))
    deadline = time.monotonic() + BUSY_FOR_S
    with pacer.transaction():
        waiter.start()  # it finds the lock taken, and starts retrying
    while not got_in.is_set() and not failed and time.monotonic() < deadline:
        with pacer.transaction() as writing:  # one short transaction after another, no gap
            writing.execute(
                "INSERT INTO work WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 "
                "FROM c WHERE n < 20000) SELECT n FROM c"
            )
    waiter.join()
    conn.close()
    assert got_in.is_set(), failed
