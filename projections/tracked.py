"""The fields of an entity whose changes an auditor wants to see, read from one snapshot.

Per object type, the fields that matter to an access review (after Coder's audit log): names,
primary email and phone, ban, lock, two-factor settings, roles, statuses. Timestamps that move
on every event (``updated_at``, ``last_active_at``) are left out: they would be noise. Values are
readable text: booleans as ``yes``/``no``, lists joined, objects as canonical JSON. A secret's
value (``password_last_updated_at``, private metadata) is kept only as a short digest, so a
change shows as "changed" and the value never leaves the log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import orjson

from projections.fields import Doc, find_by_id, obj, path_text, text

Read = Callable[[Doc], str | None]
SECRET_PREFIX = "secret:"
"""How a secret's digest is marked in the stored fields."""


def _plain(value: Any) -> str | None:
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # an integer past 64 bits, or nesting past orjson's limit
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _key(key: str) -> Read:
    return lambda d: _plain(d.get(key))


def _nested(*path: str) -> Read:
    return lambda d: path_text(d, *path)


def _secret(key: str) -> Read:
    def read(d: Doc) -> str | None:
        value = _plain(d.get(key))
        if value is None:
            return None
        return SECRET_PREFIX + hashlib.sha256(value.encode()).hexdigest()[:16]

    return read


def _listed(list_key: str, value_key: str) -> Read:
    def read(d: Doc) -> str | None:
        items = d.get(list_key)
        if not isinstance(items, list):
            return None
        values = sorted(v for i in items if isinstance(i, dict) and (v := text(i, value_key)))
        return ", ".join(values) or None

    return read


def _primary(list_key: str, id_key: str, value_key: str) -> Read:
    return lambda d: find_by_id(d.get(list_key), text(d, id_key), value_key)


def _permissions(d: Doc) -> str | None:
    items = d.get("permissions")
    if not isinstance(items, list):
        return None
    names = sorted(i if isinstance(i, str) else text(i, "key") or "?" for i in items)
    return ", ".join(names) or None


def _verification(d: Doc) -> str | None:
    return text(obj(d, "affiliation_verification") or obj(d, "verification"), "status")


TRACKED: dict[str, tuple[tuple[str, Read], ...]] = {
    "user": (
        ("first_name", _key("first_name")), ("last_name", _key("last_name")),
        ("username", _key("username")), ("external_id", _key("external_id")),
        ("primary_email_address",
         _primary("email_addresses", "primary_email_address_id", "email_address")),
        ("primary_phone_number",
         _primary("phone_numbers", "primary_phone_number_id", "phone_number")),
        ("email_addresses", _listed("email_addresses", "email_address")),
        ("phone_numbers", _listed("phone_numbers", "phone_number")),
        ("banned", _key("banned")), ("locked", _key("locked")),
        ("two_factor_enabled", _key("two_factor_enabled")), ("totp_enabled", _key("totp_enabled")),
        ("backup_code_enabled", _key("backup_code_enabled")),
        ("password_enabled", _key("password_enabled")),
        ("password", _secret("password_last_updated_at")),
        ("public_metadata", _key("public_metadata")),
        ("private_metadata", _secret("private_metadata")),
    ),
    "organization": (
        ("name", _key("name")), ("slug", _key("slug")),
        ("max_allowed_memberships", _key("max_allowed_memberships")),
        ("admin_delete_enabled", _key("admin_delete_enabled")),
        ("public_metadata", _key("public_metadata")),
        ("private_metadata", _secret("private_metadata")),
    ),
    "organizationMembership": (
        ("organization_id", _nested("organization", "id")),
        ("user_id", _nested("public_user_data", "user_id")),
        ("role", _key("role")), ("permissions", _permissions),
        ("public_metadata", _key("public_metadata")),
    ),
    "organizationInvitation": (
        ("email_address", _key("email_address")), ("role", _key("role")),
        ("status", _key("status")),
    ),
    "organizationDomain": (
        ("name", _key("name")), ("enrollment_mode", _key("enrollment_mode")),
        ("verification_status", _verification),
    ),
    "role": (
        ("key", _key("key")), ("name", _key("name")), ("description", _key("description")),
        ("permissions", _permissions),
    ),
    "permission": (("key", _key("key")), ("name", _key("name")), ("type", _key("type"))),
    "waitlistEntry": (("status", _key("status")),),
    "subscription": (("status", _key("status")),),
    "subscriptionItem": (("status", _key("status")), ("plan", _nested("plan", "name"))),
}  # fmt: skip
"""Sessions, emails, SMS and payment attempts are not here: their event type already says
what happened to them, and they are most of the log."""


def tracked_fields(object_type: str, data: Doc) -> dict[str, str | None] | None:
    """The tracked fields of one snapshot, or None for an object type not tracked."""
    readers = TRACKED.get(object_type)
    if readers is None:
        return None
    return {name: read(data) for name, read in readers}


def shown(value: str | None) -> str | None:
    """A stored field value as it may be shown: a secret's digest never is."""
    if value is not None and value.startswith(SECRET_PREFIX):
        return "(secret)"
    return value
