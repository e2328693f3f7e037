"""The events log: append-only by schema, idempotent on event_id, byte-exact bodies."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.db import LOG_PAGE_SIZE, open_store, transaction
from eventstore.engine import sqlite3
from eventstore.errors import ConfigurationError, EventConflict, StoreCorrupt
from eventstore.log import append, append_many, event_record
from eventstore.records import EventRecord
from eventstore.samples import sample_body

RECEIVED = "2026-08-04T12:00:00.000Z"


def _record(event_id: str, body: bytes) -> EventRecord:
    return event_record(event_id=event_id, svix_timestamp=1, received_at=RECEIVED, body=body)


def test_append_is_idempotent_and_keeps_the_body_byte_exact(store: sqlite3.Connection) -> None:
    body = sample_body("user.created")
    with transaction(store):
        first = append(store, _record("msg_1", body))
        again = append(store, _record("msg_1", body))
    assert first == ("stored", 1)
    assert again == ("duplicate", 1)
    (stored,) = store.execute("SELECT body FROM events").fetchone()
    assert stored == body


def test_a_different_body_under_a_stored_event_id_is_a_conflict(store: sqlite3.Connection) -> None:
    with transaction(store):
        append(store, _record("msg_1", sample_body("user.created")))
    with pytest.raises(EventConflict), transaction(store):
        append(store, _record("msg_1", sample_body("user.updated")))
    assert store.execute("SELECT count(*) FROM events").fetchone() == (1,)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET event_type = 'x'",
        "DELETE FROM events",
        "INSERT OR REPLACE INTO events SELECT * FROM events",
        "UPDATE deliveries SET outcome = 'stored'",
        "DELETE FROM deliveries",
    ],
)
def test_plain_sqlite3_cannot_change_the_log(db_path: Path, statement: str) -> None:
    conn = open_store(db_path, create=True)
    with transaction(conn):
        append(conn, _record("msg_1", sample_body("user.created")))
        conn.execute(
            "INSERT INTO deliveries (received_at, outcome) VALUES (?, 'stored')", (RECEIVED,)
        )
    conn.close()
    plain = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        plain.execute(statement)
    plain.rollback()
    assert plain.execute("SELECT event_type FROM events").fetchall() == [("user.created",)]
    plain.close()


def test_a_body_that_is_not_an_event_is_recorded_as_quarantined(store: sqlite3.Connection) -> None:
    with transaction(store):
        append(store, _record("msg_q", b"not json at all"))
        append(store, _record("msg_l", b"[1, 2]"))
    rows = store.execute("SELECT status, quarantine_reason FROM events").fetchall()
    assert [status for status, _ in rows] == ["quarantined", "quarantined"]
    assert "not valid JSON" in rows[0][1] and "not an object" in rows[1][1]


def test_a_file_that_is_not_a_database_is_refused_clearly(db_path: Path) -> None:
    db_path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreCorrupt, match="not a readable SQLite database"):
        open_store(db_path)
    assert db_path.read_bytes() == b"this is not sqlite" * 100


def test_a_foreign_database_is_refused(db_path: Path) -> None:
    other = sqlite3.connect(db_path)
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    with pytest.raises(StoreCorrupt, match="not a clerk-audit store"):
        open_store(db_path)


def test_a_missing_store_is_not_created_unless_asked(db_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no store at"):
        open_store(db_path)
    assert not db_path.exists()


def test_store_connections_zero_removed_bytes_but_not_freed_pages(db_path: Path) -> None:
    """FAST: no copy of an old row is left in a page's free space for a redaction to miss, and
    no freed page is rewritten, which Debian's default (ON) does (``eventstore.db``)."""
    conn = open_store(db_path, create=True)
    assert conn.execute("PRAGMA secure_delete").fetchone() == (2,)
    conn.close()


def test_one_batch_stores_an_event_once_and_tells_duplicates_and_conflicts(
    store: sqlite3.Connection,
) -> None:
    """The writer appends a group's events with one statement: an event_id seen earlier in the
    same batch counts as stored, exactly as if the batch ran one event at a time."""
    created, updated = sample_body("user.created"), sample_body("user.updated")
    with transaction(store):
        append(store, _record("msg_0", created))
        results = append_many(store, [
            _record("msg_1", created), _record("msg_1", created), _record("msg_0", created),
            _record("msg_1", updated), _record("msg_2", updated),
        ])  # fmt: skip
    assert results[:3] == [("stored", 2), ("duplicate", 2), ("duplicate", 1)]
    assert isinstance(results[3], EventConflict) and "position 2" in str(results[3])
    assert results[4] == ("stored", 3)
    rows = store.execute("SELECT position, event_id, body FROM events ORDER BY position")
    assert rows.fetchall() == [(1, "msg_0", created), (2, "msg_1", created), (3, "msg_2", updated)]


def test_a_new_log_has_large_pages_and_an_old_one_keeps_its_own(db_path: Path) -> None:
    """Bodies of 2-3 KB fill 16 KiB pages well (4 KiB ones were mostly empty); a log made
    with other pages keeps them (changing it would rewrite the whole file)."""
    open_store(db_path, create=True).close()
    assert sqlite3.connect(db_path).execute("PRAGMA page_size").fetchone() == (LOG_PAGE_SIZE,)
    old = db_path.with_name("old.db")
    plain = sqlite3.connect(old)
    plain.execute("PRAGMA page_size = 4096")
    plain.execute("VACUUM")
    plain.close()
    open_store(old, create=True).close()
    assert sqlite3.connect(old).execute("PRAGMA page_size").fetchone() == (4096,)
