"""The views over the projections: current memberships, and states Clerk never sends an
event for (derived at read time, never written by the fold)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from eventstore.paths import default_projections_path
from projections import rebuild
from tests.support.direct import append_all, connect, new_store
from tests.support.history import envelope

T0 = 1_786_000_000_000
FUTURE = 4_102_444_800_000  # 2100-01-01
PAST = 1_000_000_000_000  # 2001-09-09


def _membership(
    member_id: str, created: int, *, user: str = "user_u", org: str = "org_o"
) -> dict[str, Any]:
    return {
        "id": member_id,
        "role": "org:member",
        "created_at": created,
        "updated_at": created,
        "organization": {"id": org, "name": "O"},
        "public_user_data": {"user_id": user},
    }


def _events(*items: tuple[str, dict[str, Any], int]) -> list[tuple[str, bytes]]:
    return [(f"msg_{n:03d}", envelope(t, d, ts)) for n, (t, d, ts) in enumerate(items)]


def _current(db_path: Path, events: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    conn = new_store(db_path)
    append_all(conn, events)
    rows = conn.execute("SELECT user_id, membership_id FROM current_memberships").fetchall()
    conn.close()
    return rows


OLD = ("organizationMembership.created", _membership("orgmem_old", T0), T0)
NEW = ("organizationMembership.created", _membership("orgmem_new", T0 + 5000), T0 + 5000)
OLD_DELETED = ("organizationMembership.deleted", _membership("orgmem_old", T0), T0 + 9000)
NEW_DELETED = ("organizationMembership.deleted", _membership("orgmem_new", T0 + 5000), T0 + 9999)


@pytest.mark.parametrize("order", list(itertools.permutations([OLD, NEW, OLD_DELETED])))
def test_a_late_delete_of_an_older_membership_keeps_the_newer_one(
    tmp_path: Path, order: tuple[Any, ...]
) -> None:
    assert _current(tmp_path / "a.db", _events(*order)) == [("user_u", "orgmem_new")]


def test_a_removed_member_whose_old_delete_never_came_is_not_current(tmp_path: Path) -> None:
    assert _current(tmp_path / "a.db", _events(OLD, NEW, NEW_DELETED)) == []


def test_members_of_a_deleted_organization_or_deleted_users_are_not_current(tmp_path: Path) -> None:
    other = ("organizationMembership.created", _membership("orgmem_2", T0, user="user_v"), T0)
    org_gone = ("organization.deleted", {"id": "org_o", "deleted": True}, T0 + 1)
    user_gone = ("user.deleted", {"id": "user_v", "deleted": True}, T0 + 1)
    assert _current(tmp_path / "a.db", _events(OLD, other, user_gone)) == [("user_u", "orgmem_old")]
    assert _current(tmp_path / "b.db", _events(OLD, other, org_gone)) == []


def _session(session_id: str, status: str, expire_at: int, abandon_at: int) -> dict[str, Any]:
    return {
        "id": session_id,
        "user_id": "user_u",
        "status": status,
        "created_at": T0,
        "updated_at": T0,
        "expire_at": expire_at,
        "abandon_at": abandon_at,
    }


def test_session_states_derive_expired_and_abandoned_at_read_time(db_path: Path) -> None:
    conn = new_store(db_path)
    append_all(
        conn,
        _events(
            ("session.created", _session("sess_live", "active", FUTURE, FUTURE), T0),
            ("session.created", _session("sess_expired", "active", PAST, FUTURE), T0),
            ("session.created", _session("sess_abandoned", "pending", FUTURE, PAST), T0),
            ("session.revoked", _session("sess_revoked", "revoked", PAST, PAST), T0),
        ),
    )
    states = dict(conn.execute("SELECT id, effective_status FROM session_states").fetchall())
    stored = dict(conn.execute("SELECT id, status FROM sessions").fetchall())
    conn.close()
    assert states == {
        "sess_live": "active",
        "sess_expired": "expired",
        "sess_abandoned": "abandoned",
        "sess_revoked": "revoked",
    }
    assert stored["sess_expired"] == "active", "the fold must not write a derived state"


def test_invitation_states_derive_expired(db_path: Path) -> None:
    def invitation(inv_id: str, status: str, expires_at: int) -> tuple[str, dict[str, Any], int]:
        data = {
            "id": inv_id,
            "status": status,
            "organization_id": "org_o",
            "created_at": T0,
            "updated_at": T0,
            "expires_at": expires_at,
        }
        return ("organizationInvitation.created", data, T0)

    conn = new_store(db_path)
    append_all(
        conn,
        _events(
            invitation("orginv_a", "pending", PAST),
            invitation("orginv_b", "pending", FUTURE),
            invitation("orginv_c", "accepted", PAST),
        ),
    )
    states = dict(conn.execute("SELECT id, effective_status FROM invitation_states").fetchall())
    conn.close()
    assert states == {"orginv_a": "expired", "orginv_b": "pending", "orginv_c": "accepted"}


def test_views_survive_a_rebuild(db_path: Path) -> None:
    built = new_store(db_path)
    append_all(built, _events(OLD, NEW, OLD_DELETED))
    built.close()
    rebuild(db_path, default_projections_path(db_path))
    conn = connect(db_path)
    assert conn.execute("SELECT membership_id FROM current_memberships").fetchall() == [
        ("orgmem_new",)
    ]
    conn.close()
