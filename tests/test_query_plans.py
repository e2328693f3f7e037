"""The indexes that keep the auditor's pages fast on a large log, shown with EXPLAIN QUERY PLAN.

Every history query and every "as of" query must reach its rows through an index (a SEARCH),
never by reading a whole projection table (a SCAN), and the timeline's search goes through its
full-text index. Timings on the 1M-event log are in ``bench/queries.py`` and
``bench/analysis.md``; this test shows why they hold at any size.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eventstore.cli.datasette import load_metadata
from eventstore.engine import sqlite3
from tests.support.audit_story import at, fixture_events
from tests.support.direct import append_all, new_store

INDEXED = {
    "user_history": {"user_id": "user_maya", "from": at(1), "to": ""},
    "organization_history": {"organization_id": "org_h", "from": "", "to": ""},
    "membership_changes": {"organization_id": "org_h", "from": "", "to": ""},
    "organization_members": {"organization_id": "org_h"},
    "object_history": {"object_id": "sess_1", "from": "", "to": ""},
    "sessions_for_user": {"user_id": "user_maya", "from": "", "to": ""},
    "sign_ins_from_ip": {"client_ip": "192.0.2.1", "from": "", "to": ""},
    "sign_ins_for_user": {"user_id": "user_maya", "from": "", "to": ""},
    "user_changes": {"user_id": "user_maya", "from": "", "to": ""},
    "object_changes": {"object_id": "orgmem_1", "from": "", "to": ""},
    "organization_members_as_of": {"organization_id": "org_h", "at": at(3)},
    "who_had_role": {"role": "admin", "at": at(6)},
}
"""The history and as-of queries, each with parameters."""
LARGE = ("audit_timeline", "changes", "membership_roles", "user_bans", "sessions", "users",
         "organizations", "organization_memberships", "entity_versions", "events")  # fmt: skip
_SCAN = re.compile(rf"\bSCAN ({'|'.join(LARGE)})\b(?! USING (COVERING )?INDEX)")
SEARCH_SQL = (
    "SELECT position, summary FROM audit_timeline WHERE position IN "
    "(SELECT rowid FROM audit_timeline_fts WHERE audit_timeline_fts MATCH :q) "
    "ORDER BY occurred_at DESC LIMIT 51"
)
"""What Datasette runs for the timeline's search box (``?_search=``)."""


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    store = new_store(Path(tmp_path_factory.mktemp("plans")) / "audit.db")
    append_all(store, fixture_events())
    return store


PAGE = {"_page_rows": 101, "_page_offset": 0}
"""The magic parameters of a paged query's first page (``eventstore.datasette_exports``)."""


def plan(conn: sqlite3.Connection, sql: str, params: dict[str, str]) -> list[str]:
    return [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", {**PAGE, **params})]


@pytest.mark.parametrize("name", sorted(INDEXED))
def test_every_history_query_searches_an_index(conn: sqlite3.Connection, name: str) -> None:
    query = load_metadata()["databases"]["audit"]["queries"][name]
    steps = plan(conn, query["sql"], INDEXED[name])
    print(name, *steps, sep="\n  ")
    assert not [step for step in steps if _SCAN.search(step)], steps
    assert any(" USING " in step for step in steps), steps


def test_the_search_box_uses_the_full_text_index(conn: sqlite3.Connection) -> None:
    steps = plan(conn, SEARCH_SQL, {"q": '"maia@example.com"'})
    print(*steps, sep="\n  ")
    assert any("VIRTUAL TABLE INDEX" in step and "audit_timeline_fts" in step for step in steps)
    assert not [step for step in steps if _SCAN.search(step)], steps


def test_the_indexes_exist(conn: sqlite3.Connection) -> None:
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {
        "audit_timeline_by_user_id_occurred_at",
        "audit_timeline_by_organization_id_occurred_at",
        "audit_timeline_by_object_id",
        "membership_roles_by_organization_id_valid_from",
        "membership_roles_by_role_valid_from_valid_to_organization_id_user_id",
        "sessions_by_user_id",
    } <= names


def test_who_had_role_picks_its_page_from_an_index_alone(conn: sqlite3.Connection) -> None:
    """Every holder is read from the covering index; only the page's rows are joined."""
    query = load_metadata()["databases"]["audit"]["queries"]["who_had_role"]
    steps = plan(conn, query["sql"], INDEXED["who_had_role"])
    index = "COVERING INDEX membership_roles_by_role_valid_from_valid_to_organization_id_user_id"
    assert steps[:4] == [
        "CO-ROUTINE r",  # the page: chosen from the index, sorted, cut
        f"SEARCH membership_roles USING {index} (role=? AND valid_from<?)",
        "USE TEMP B-TREE FOR ORDER BY",
        "SCAN r",  # then its rows only are joined to names
    ], steps
