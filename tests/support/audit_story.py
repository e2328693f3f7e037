"""A small fixture history of one user and one membership, for exact-row tests.

Maya Okafor is created, banned, unbanned while turning on two-factor authentication, sets a
password (and private metadata, a secret), then changes her first name and primary email. Her
membership of Harbor starts as member, becomes admin, and is deleted.
"""

from __future__ import annotations

from typing import Any

from eventstore.timefmt import iso_ms
from tests.support.history import BASE_MS, envelope

T0 = BASE_MS


def _user(stamp: int, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "user_maya", "object": "user", "first_name": "Maya", "last_name": "Okafor",
        "username": None, "created_at": T0, "updated_at": stamp, "banned": False,
        "locked": False, "two_factor_enabled": False, "totp_enabled": False,
        "backup_code_enabled": False, "password_enabled": False,
        "password_last_updated_at": None, "primary_email_address_id": "idn_1",
        "email_addresses": [{"id": "idn_1", "email_address": "maya@example.com"}],
        "phone_numbers": [], "private_metadata": {}, "public_metadata": {},
    }  # fmt: skip
    return {**data, **fields}


def _membership(stamp: int, role: str) -> dict[str, Any]:
    return {
        "id": "orgmem_1", "object": "organization_membership", "role": role,
        "created_at": T0, "updated_at": stamp,
        "organization": {"id": "org_h", "name": "Harbor"},
        "public_user_data": {"user_id": "user_maya", "first_name": "Maya", "last_name": "Okafor"},
    }  # fmt: skip


S = 1000
_2FA = {"two_factor_enabled": True, "totp_enabled": True}
_PASSWORD = {
    "password_enabled": True,
    "password_last_updated_at": T0 + 3 * S,
    "private_metadata": {"token": "s3cret"},
}
_EMAILS = [
    {"id": "idn_1", "email_address": "maya@example.com"},
    {"id": "idn_2", "email_address": "maia@example.com"},
]


def _session(session_id: str, stamp: int, status: str, city: str) -> dict[str, Any]:
    activity = {
        "object": "session_activity", "device_type": "iPhone", "browser_name": "Safari",
        "browser_version": "18.1", "city": city, "country": "NG", "is_mobile": True,
    }  # fmt: skip
    return {
        "id": session_id, "object": "session", "user_id": "user_maya", "status": status,
        "created_at": T0 + 1500 if session_id == "sess_1" else T0 + 6 * S,
        "updated_at": stamp, "latest_activity": activity, "actor": None,
    }  # fmt: skip


SESSIONS = [
    ("msg_10", "session.created", _session("sess_1", T0 + 1500, "active", "Lagos")),
    ("msg_11", "session.ended", _session("sess_1", T0 + 7 * S, "ended", "Lagos")),
    ("msg_12", "session.created", _session("sess_2", T0 + 6 * S, "active", "Abuja")),
    ("msg_20", "user.deleted", {"id": "user_gone", "object": "user", "deleted": True,
                                "updated_at": T0 + 8 * S}),
]  # fmt: skip
SIGN_IN_IP = "192.0.2.1"
"""The request address every event of the story carries (``tests.support.history``)."""

HARBOR = {"id": "org_h", "object": "organization", "name": "Harbor", "slug": "harbor",
          "created_at": T0, "updated_at": T0}  # fmt: skip
HISTORY = [
    ("msg_00", "organization.created", HARBOR),
    ("msg_01", "user.created", _user(T0)),
    ("msg_02", "user.updated", _user(T0 + 1 * S, banned=True)),
    ("msg_03", "user.updated", _user(T0 + 2 * S, **_2FA)),
    ("msg_04", "user.updated", _user(T0 + 3 * S, **_2FA, **_PASSWORD)),
    ("msg_05", "user.updated", _user(T0 + 4 * S, **_2FA, **_PASSWORD, first_name="Maia",
                                     primary_email_address_id="idn_2", email_addresses=_EMAILS)),
    ("msg_06", "organizationMembership.created", _membership(T0 + 1 * S, "org:member")),
    ("msg_07", "organizationMembership.updated", _membership(T0 + 5 * S, "org:admin")),
    ("msg_08", "organizationMembership.deleted", _membership(T0 + 5 * S, "org:admin")),
]  # fmt: skip
_TIMES = {"msg_08": T0 + 9 * S}


def fixture_events() -> list[tuple[str, bytes]]:
    return [(eid, envelope(kind, data, _TIMES.get(eid, data["updated_at"])))
            for eid, kind, data in HISTORY + SESSIONS]  # fmt: skip


def at(offset_s: int) -> str:
    """The store's text for ``offset_s`` seconds after the story's start."""
    return iso_ms(T0 + offset_s * S)
