"""Rendering a planned event (:mod:`bench.workload`) into its Clerk-like body.

Bodies start from the shipped samples, compact as Svix delivers them, with ids, names and
times varied per entity and step: 1-3 KB, except the small ``deleted`` stubs Clerk sends for
users and organizations. Times follow the samples' conventions (ms; the envelope
``timestamp`` a few ms after ``data.updated_at``); a membership ``deleted`` keeps the
``updated_at`` of the state it removes, as Clerk's do.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

from bench.templates import BodyTemplate, json_str, template_from
from bench.workload import EVENT_TYPES, Kind, unpack

INSTANCE_ID = "ins_2zENH9hSpyNeH5z5VTFW826d8W8"
"""The instance of every shipped sample, kept in every generated body."""
T0_MS = 1_785_000_000_000
STEP_MS = 6 * 3600 * 1000
FIRST = tuple(map(json_str, ("Maya", "Tomás", "Aiko", "Noah", "Zoë", "Liam", "Priya", "Omar")))
LAST = tuple(map(json_str, ("Okafor", "Lindqvist", "Tanaka", "Müller", "Silva", "Reyes", "Kim")))
ORG_WORDS = ("Okafor", "Lindqvist", "Tanaka", "Harbor", "Silva", "Novak", "Reyes", "Haddad")
ROLES = ("org:member", "org:admin", "org:analyst_lead", "org:billing")
STATUS = {Kind.SESSION_ENDED: "ended", Kind.SESSION_REVOKED: "revoked"}
_B64_TO_ALNUM = bytes.maketrans(b"+/", b"xZ")
KSUID_EPOCH = 1_400_000_000
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SENT_PER_SECOND = 1_000
"""How many events the workload sends per second of Svix's clock (it fixes how many message
ids share a second; real ones are made at sending time, so they arrive nearly in id order)."""

Values = dict[str, str]
"""Slot name -> JSON text."""


class Rendered(NamedTuple):
    """A rendered event: what a log row and an HTTP request need."""

    event_id: str
    event_type: str
    object_type: str
    object_id: str
    occurred_ms: int
    body: bytes


def token(key: str) -> str:
    """A 27-character id part of KSUID's length and alphabet, a pure function of ``key``."""
    digest = hashlib.blake2b(key.encode(), digest_size=21).digest()
    return base64.b64encode(digest).translate(_B64_TO_ALNUM)[:27].decode()


def ksuid(second: int, key: str) -> str:
    """A KSUID as Svix and Clerk make them: the 4-byte second (from KSUID's epoch, 1.4e9) then
    16 bytes (here a pure function of ``key``), in base62, 27 characters: ids made in a later
    second sort after those of an earlier one."""
    payload = hashlib.blake2b(key.encode(), digest_size=16).digest()
    number = int.from_bytes((second - KSUID_EPOCH).to_bytes(4, "big") + payload, "big")
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits)).rjust(27, "0")


def message_id(spec: int, sent: int) -> str:
    """The ``svix-id`` of the ``sent``-th event the workload sends (0 first): Svix makes it when
    the event is sent, so ids follow the sending order, :data:`SENT_PER_SECOND` to a second."""
    return f"msg_{ksuid(T0_MS // 1000 + sent // SENT_PER_SECOND, f'msg:{spec}')}"


@cache
def clerk_id(prefix: str, index: int) -> str:
    """Clerk's id of entity ``index`` of a kind (``user_...``); cached, as most are reused."""
    return f"{prefix}_{token(f'{prefix}:{index}')}"


def _q(value: str) -> str:
    """An ASCII value with nothing to escape (ids, emails, slugs) as JSON text."""
    return f'"{value}"'


def _user_base(user: int) -> int:
    return T0_MS + user * 25_000


def _org_base(org: int) -> int:
    return _user_base(org * 10) + 60_000


def _membership_base(membership: int) -> int:
    return _user_base(membership // 2) + 120_000 + membership % 2 * 86_400_000


def _session_base(session: int) -> int:
    return _user_base(session // 4) + (session % 4 + 1) * 3_600_000


def _person(user: int, step: int) -> Values:
    created = _user_base(user)
    return {
        "user_id": _q(clerk_id("user", user)),
        "first_name": FIRST[user % len(FIRST)],
        "last_name": LAST[(user // len(FIRST) + step // 2) % len(LAST)],
        "email": _q(f"user{user}.{step // 3}@example.com"),
        "email_id": _q(clerk_id("idn", user)),
        "user_created_at": str(created),
        "user_updated_at": str(created + 318),
    }


def _user_values(user: int, step: int, time: int, kind: Kind) -> Values:
    return _person(user, step) | {
        "username": _q(f"u{user}_{step}"),
        "phone_id": _q(clerk_id("idn", -user - 1)),
        "phone": _q(f"+1415555{user % 10_000:04d}"),
        "updated_at": str(time),
        "last_sign_in_at": str(time - 60_000),
        "external_id": _q(f"crm-{user:06d}"),
    }


def _org_values(org: int, step: int, time: int, kind: Kind) -> Values:
    return {
        "org_id": _q(clerk_id("org", org)),
        "org_name": _q(f"{ORG_WORDS[org % len(ORG_WORDS)]} Analytics {org}" + " Ltd" * (step % 2)),
        "slug": _q(f"org-{org}"),
        "created_by": _q(clerk_id("user", org * 10)),
        "org_created_at": str(_org_base(org)),
        "org_updated_at": str(time),
    }


def _membership_values(membership: int, step: int, time: int, kind: Kind) -> Values:
    user, org = membership // 2, membership // 20 + membership % 2
    deleted = kind is Kind.MEMBERSHIP_DELETED
    return (
        _person(user, 0)
        | _org_values(org, 0, _org_base(org), Kind.ORG_CREATED)
        | {
            "id": _q(clerk_id("orgmem", membership)),
            "role": _q(ROLES[(membership + step) % len(ROLES)]),
            "created_at": str(_membership_base(membership)),
            "updated_at": str(time - STEP_MS if deleted else time),
        }
    )


def _session_values(session: int, step: int, time: int, kind: Kind) -> Values:
    created = _session_base(session)
    status = STATUS.get(kind, "removed" if kind is Kind.SESSION_REMOVED else "active")
    return _person(session // 4, 0) | {
        "id": _q(clerk_id("sess", session)),
        "activity_id": _q(clerk_id("sess_activity", session)),
        "client_id": _q(clerk_id("client", session // 4)),
        "status": _q(status),
        "created_at": str(created),
        "updated_at": str(time),
        "expire_at": str(created + 7 * 86_400_000),
        "abandon_at": str(created + 30 * 86_400_000),
    }


# --- templates -----------------------------------------------------------------------------

_ENVELOPE = {
    "type": "type",
    "timestamp": "timestamp",
    "event_attributes.http_request.client_ip": "client_ip",
}
_PERSON = {
    "first_name": "first_name",
    "last_name": "last_name",
    "primary_email_address_id": "email_id",
    "email_addresses.0.id": "email_id",
    "email_addresses.0.email_address": "email",
    "created_at": "user_created_at",
}
_USER = {f"data.{path}": slot for path, slot in _PERSON.items()} | {
    "data.id": "user_id",
    "data.username": "username",
    "data.updated_at": "updated_at",
    "data.last_sign_in_at": "last_sign_in_at",
    **_ENVELOPE,
}
_PHONE = {
    "data.primary_phone_number_id": "phone_id",
    "data.phone_numbers.0.id": "phone_id",
    "data.phone_numbers.0.phone_number": "phone",
}
_ORG = {
    "id": "org_id",
    "name": "org_name",
    "slug": "slug",
    "created_by": "created_by",
    "created_at": "org_created_at",
    "updated_at": "org_updated_at",
}
_MEMBERSHIP = {f"data.organization.{path}": slot for path, slot in _ORG.items()} | {
    "data.id": "id",
    "data.role": "role",
    "data.public_user_data.user_id": "user_id",
    "data.public_user_data.first_name": "first_name",
    "data.public_user_data.last_name": "last_name",
    "data.public_user_data.identifier": "email",
    "data.created_at": "created_at",
    "data.updated_at": "updated_at",
    **_ENVELOPE,
}
_SESSION = {f"data.user.{path}": slot for path, slot in _PERSON.items()} | {
    "data.id": "id",
    "data.user_id": "user_id",
    "data.user.id": "user_id",
    "data.user.updated_at": "user_updated_at",
    "data.client_id": "client_id",
    "data.status": "status",
    "data.last_active_at": "updated_at",
    "data.latest_activity.id": "activity_id",
    "data.latest_activity.ip_address": "client_ip",
    "data.expire_at": "expire_at",
    "data.abandon_at": "abandon_at",
    "data.created_at": "created_at",
    "data.updated_at": "updated_at",
    **_ENVELOPE,
}


def _templates() -> dict[Kind, BodyTemplate]:
    session = template_from("session.created", _SESSION)
    return {
        Kind.USER_CREATED: template_from("user.created", _USER),
        Kind.USER_UPDATED: template_from("user.updated", _USER | _PHONE),
        Kind.USER_DELETED: template_from(
            "user.deleted", {"data.id": "user_id", "data.external_id": "external_id", **_ENVELOPE}
        ),
        Kind.ORG_CREATED: template_from("organization.created", _prefixed(_ORG) | _ENVELOPE),
        Kind.ORG_UPDATED: template_from("organization.updated", _prefixed(_ORG) | _ENVELOPE),
        Kind.ORG_DELETED: template_from(
            "organization.deleted", {"data.id": "org_id", "data.slug": "slug", **_ENVELOPE}
        ),
        Kind.MEMBERSHIP_CREATED: template_from("organizationMembership.created", _MEMBERSHIP),
        Kind.MEMBERSHIP_UPDATED: template_from("organizationMembership.updated", _MEMBERSHIP),
        Kind.MEMBERSHIP_DELETED: template_from("organizationMembership.deleted", _MEMBERSHIP),
        **dict.fromkeys(
            (Kind.SESSION_CREATED, Kind.SESSION_ENDED, Kind.SESSION_REVOKED, Kind.SESSION_REMOVED),
            session,
        ),
    }


def _prefixed(slots: dict[str, str]) -> dict[str, str]:
    return {f"data.{path}": slot for path, slot in slots.items()}


# --- families ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Family:
    """What the events of one kind of entity share."""

    object_type: str
    prefix: str
    base: Callable[[int], int]
    values: Callable[[int, int, int, Kind], Values]


USER = Family("user", "user", _user_base, _user_values)
ORGANIZATION = Family("organization", "org", _org_base, _org_values)
MEMBERSHIP = Family("organizationMembership", "orgmem", _membership_base, _membership_values)
SESSION = Family("session", "sess", _session_base, _session_values)
FAMILIES = {
    kind: family
    for family in (USER, ORGANIZATION, MEMBERSHIP, SESSION)
    for kind in Kind
    if EVENT_TYPES[kind].startswith(f"{family.object_type}.")
}


class Renderer:
    """Turns packed events into :class:`Rendered` events (pure: the same spec, the same body)."""

    def __init__(self) -> None:
        self._templates = _templates()

    def render(self, spec: int, sent: int = 0) -> Rendered:
        """The event ``spec``, sent as the ``sent``-th event of its stream (0 first)."""
        entity, step, kind, _echo = unpack(spec)
        family = FAMILIES[kind]
        time = family.base(entity) + step * STEP_MS + entity * 7919 % 997 * 1000
        values = family.values(entity, step, time, kind)
        values["type"] = f'"{EVENT_TYPES[kind]}"'
        values["timestamp"] = str(time + 3)
        values["client_ip"] = f'"198.51.100.{entity % 250 + 1}"'
        return Rendered(
            event_id=message_id(spec, sent),
            event_type=EVENT_TYPES[kind],
            object_type=family.object_type,
            object_id=clerk_id(family.prefix, entity),
            occurred_ms=time + 3,
            body=self._templates[kind].render(values),
        )
