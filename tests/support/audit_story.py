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
            for eid, kind, data in HISTORY]  # fmt: skip


def at(offset_s: int) -> str:
    """The store's text for ``offset_s`` seconds after the story's start."""
    return iso_ms(T0 + offset_s * S)
