"""The timeline's full-text index (``projections.search``, ``projections.schema``): every row
in the one shard its user (else its object) names, with the words it has now, through inserts,
updates and deletes; the view the search box queries lists each row once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.engine import sqlite3
from tests.support.audit_story import fixture_events
from tests.support.direct import append_all, misindexed, new_store


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = new_store(tmp_path / "audit.db")
    append_all(conn, fixture_events())
    yield conn
    conn.close()


def _found(conn: sqlite3.Connection, words: str) -> set[int]:
    query = "SELECT rowid FROM audit_timeline_fts WHERE audit_timeline_fts MATCH ?"
    return {position for (position,) in conn.execute(query, (words,))}


def _first_row(conn: sqlite3.Connection) -> int:
    """The first timeline row about a user."""
    query = "SELECT min(position) FROM audit_timeline WHERE user_id IS NOT NULL"
    (position,) = conn.execute(query).fetchone()
    assert isinstance(position, int)
    return position


def test_the_projected_rows_are_indexed_each_in_its_shard(conn: sqlite3.Connection) -> None:
    assert misindexed(conn) == []
    shards = conn.execute("SELECT count(*) FROM sqlite_master WHERE name GLOB "
                          "'audit_timeline_fts_*_data' AND rootpage > 0").fetchone()  # fmt: skip
    assert shards == (16,)


def test_the_view_lists_each_row_once(conn: sqlite3.Connection) -> None:
    rows = conn.execute("SELECT rowid FROM audit_timeline_fts ORDER BY rowid").fetchall()
    assert rows == conn.execute("SELECT position FROM audit_timeline ORDER BY position").fetchall()


def test_an_updated_row_is_found_by_its_new_words_only(conn: sqlite3.Connection) -> None:
    position = _first_row(conn)
    conn.execute("UPDATE audit_timeline SET summary = 'zanzibar' WHERE position = ?", (position,))
    assert _found(conn, "zanzibar") == {position}
    conn.execute("UPDATE audit_timeline SET summary = 'quokka' WHERE position = ?", (position,))
    assert _found(conn, "zanzibar") == set() and _found(conn, "quokka") == {position}
    assert misindexed(conn) == []


def test_a_deleted_row_leaves_the_index(conn: sqlite3.Connection) -> None:
    position = _first_row(conn)
    (user_id,) = conn.execute("SELECT user_id FROM audit_timeline WHERE position = ?",
                              (position,)).fetchone()  # fmt: skip
    assert position in _found(conn, f'"{user_id}"')
    conn.execute("DELETE FROM audit_timeline WHERE position = ?", (position,))
    assert position not in _found(conn, f'"{user_id}"')
    assert misindexed(conn) == []
