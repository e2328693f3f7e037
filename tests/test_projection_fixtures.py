"""Every Clerk event type, posted to a real server, lands in its table and in the timeline;
and the fixtures' story, delivered in reverse order, projects to what actually happened."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path
from eventstore.samples import sample_body, sample_event_id, sample_names
from tests.support.server import Server, running_server
from tests.support.signing import new_secret

TABLE_OF = {  # CONTRACT §5, written out here rather than read from the code under test
    "user": "users",
    "organization": "organizations",
    "organizationMembership": "organization_memberships",
    "organizationInvitation": "organization_invitations",
    "organizationDomain": "organization_domains",
    "session": "sessions",
    "role": "roles",
    "permission": "permissions",
    "waitlistEntry": "waitlist_entries",
    "subscription": "subscriptions",
    "subscriptionItem": "subscription_items",
    "paymentAttempt": "payment_attempts",
    "email": "emails",
    "sms": "sms_messages",
}
MAYA, TOMAS = "user_3HSCezDl5JNycphIFtMXfMdwRie", "user_3HYEraVD8HZrbHy49pWwPxvGypM"
HARBOR = "org_3HVGrcttx9XqvtVfw6MCkbb6As8"


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("fixtures") / "audit.db", new_secret()) as s:
        yield s


def _query(db_path: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    """``sql`` on the projections of the log at ``db_path``."""
    conn = sqlite3.connect(default_projections_path(db_path))
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("name", sample_names())
def test_each_event_type_lands_in_its_table_and_the_timeline(
    module_server: Server, name: str
) -> None:
    body = sample_body(name)
    response = module_server.post(sample_event_id(name), body)
    assert response.status_code == 200 and response.json()["status"] == "stored", response.text
    data = json.loads(body)["data"]
    table = TABLE_OF[name.split(".")[0]]
    module_server.wait_projected()
    (row,) = _query(module_server.sqlite_path, f"SELECT * FROM {table} WHERE id = ?", data["id"])
    if name.endswith(".deleted"):
        assert row["deleted"] == 1
    (line,) = _query(
        module_server.sqlite_path,
        "SELECT * FROM audit_timeline WHERE event_id = ?",
        sample_event_id(name),
    )
    assert (line["event_type"], line["object_id"]) == (name, data["id"])
    assert line["position"] == response.json()["position"]
    assert line["summary"] and not line["summary"].startswith(name), "no specific summary"


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All fixtures delivered newest file first (out of causal order), some twice."""
    path = tmp_path_factory.mktemp("story") / "audit.db"
    with running_server(path, new_secret()) as server:
        names = sorted(sample_names(), reverse=True)
        for name in names + names[:10]:
            assert server.post(sample_event_id(name), sample_body(name)).status_code == 200
        server.wait_projected()
    return path


def test_a_membership_delete_with_the_same_updated_at_still_deletes(story: Path) -> None:
    (row,) = _query(story, "SELECT * FROM organization_memberships WHERE user_id = ?", TOMAS)
    assert (row["deleted"], row["role"]) == (1, "org:analyst_lead")
    assert row["deleted_at"] == "2026-08-11T19:20:02.614Z"


def test_current_memberships_show_who_is_still_a_member(story: Path) -> None:
    rows = _query(
        story, "SELECT user_id, role FROM current_memberships WHERE organization_id = ?", HARBOR
    )
    assert [tuple(r) for r in rows] == [(MAYA, "org:admin")]


def test_the_users_own_latest_snapshot_wins_over_embedded_ones(story: Path) -> None:
    (maya,) = _query(story, "SELECT * FROM users WHERE id = ?", MAYA)
    assert (maya["first_name"], maya["last_name"]) == ("Maya", "Okafor-Reyes")
    assert maya["event_id"] == sample_event_id("user.updated")


def test_a_user_seen_only_through_a_delete_stub_gets_a_deleted_row(story: Path) -> None:
    (row,) = _query(story, "SELECT * FROM users WHERE id = 'user_38nXCVliqKPkTa3C3WZ6COGP3hw'")
    assert (row["deleted"], row["data"], row["first_name"]) == (1, None, None)
    assert row["event_id"] == sample_event_id("user.deleted")


def test_sessions_end_in_the_state_of_their_latest_event(story: Path) -> None:
    rows = _query(story, "SELECT id, status FROM sessions ORDER BY id")
    assert {r["id"]: r["status"] for r in rows} == {
        "sess_3HSCf4TbQkZa1ovYYYI9o742Axw": "ended",
        "sess_3HV3F3AsuBBRgoy11ttwsWGnjKP": "removed",
        "sess_3HYErivoGPtfWWvXmI6cVljBbMI": "pending",
        "sess_3HeF08k1qrpxSBcKrqp0bNZOrIE": "revoked",
    }


def test_the_timeline_has_one_row_per_event_not_per_delivery(story: Path) -> None:
    rows = _query(story, "SELECT count(*), count(DISTINCT event_id) FROM audit_timeline")
    assert tuple(rows[0]) == (len(sample_names()), len(sample_names()))
    (line,) = _query(
        story,
        "SELECT summary FROM audit_timeline WHERE event_id = ?",
        sample_event_id("organizationMembership.created"),
    )
    assert line["summary"] == "Maya Okafor joined Harbor Analytics as admin"
