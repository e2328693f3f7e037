"""Which Clerk object goes to which table, and the columns flattened out of its snapshot.

One :class:`EntitySpec` per object type (the resource part of the event ``type``, never
``data.object``, which drifts). Every entity table also has the common columns of
:data:`COMMON_COLUMNS`; the table definitions are generated from these specs
(``projections.schema``), so a column exists exactly when it is flattened here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from projections.fields import (
    Doc,
    actor_id,
    find_by_id,
    flag,
    full_name,
    iso,
    number,
    obj,
    path_text,
    session_activity,
    text,
)

Extract = Callable[[Doc], Any]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    sql_type: str
    extract: Extract


@dataclass(frozen=True, slots=True)
class EntitySpec:
    object_type: str
    """The resource part of the event type (``organizationMembership``)."""
    table: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


COMMON_COLUMNS = (
    "created_at", "updated_at", "deleted", "deleted_at", "data", "event_id", "version_ms",
    "version_rank",
)  # fmt: skip
"""Columns after ``id`` and the flattened ones, in every entity table."""


def _text(key: str) -> Column:
    return Column(key, "TEXT", lambda d: text(d, key))


def _time(key: str) -> Column:
    return Column(key, "TEXT", lambda d: iso(d, key))


def _flag(key: str) -> Column:
    return Column(key, "INTEGER", lambda d: flag(d, key))


def _nested(name: str, *path: str) -> Column:
    return Column(name, "TEXT", lambda d: path_text(d, *path))


def _primary(list_key: str, id_key: str, value_key: str) -> Extract:
    return lambda d: find_by_id(d.get(list_key), text(d, id_key), value_key)


_primary_email = _primary("email_addresses", "primary_email_address_id", "email_address")


def _display_name(d: Doc) -> str | None:
    return full_name(d) or text(d, "username") or _primary_email(d)


def _grand_total(d: Doc) -> int | float | str | None:
    return number(obj(obj(d, "totals"), "grand_total"), "amount")


def _grand_total_currency(d: Doc) -> str | None:
    return text(obj(obj(d, "totals"), "grand_total"), "currency")


def _verification_status(d: Doc) -> str | None:
    verification = obj(d, "affiliation_verification") or obj(d, "verification")
    return text(verification, "status")


USER = EntitySpec("user", "users", (
    Column("display_name", "TEXT", _display_name),
    _text("username"), _text("first_name"), _text("last_name"),
    Column("primary_email_address", "TEXT", _primary_email),
    Column("primary_phone_number", "TEXT",
           _primary("phone_numbers", "primary_phone_number_id", "phone_number")),
    _text("external_id"), _flag("banned"), _flag("locked"), _time("last_sign_in_at"),
))  # fmt: skip

ORGANIZATION = EntitySpec("organization", "organizations", (
    _text("name"), _text("slug"), _text("created_by"),
))  # fmt: skip

MEMBERSHIP = EntitySpec("organizationMembership", "organization_memberships", (
    _nested("organization_id", "organization", "id"),
    _nested("user_id", "public_user_data", "user_id"),
    _text("role"), _text("role_name"),
))  # fmt: skip

INVITATION = EntitySpec("organizationInvitation", "organization_invitations", (
    _text("organization_id"), _text("email_address"), _text("role"), _text("status"),
    _text("inviter_id"), _text("user_id"), _time("expires_at"),
))  # fmt: skip

DOMAIN = EntitySpec("organizationDomain", "organization_domains", (
    _text("organization_id"), _text("name"), _text("enrollment_mode"),
    Column("verification_status", "TEXT", _verification_status),
))  # fmt: skip

_ENDED = frozenset({"ended", "removed", "revoked", "expired", "abandoned", "replaced"})


def _ended_at(d: Doc) -> str | None:
    """When a session that is over ended: its last update, per Clerk."""
    return iso(d, "updated_at") if text(d, "status") in _ENDED else None


def _activity(index: int) -> Extract:
    return lambda d: session_activity(d)[index]


SESSION = EntitySpec("session", "sessions", (
    _text("user_id"), _text("client_id"), _text("status"), _time("last_active_at"),
    _time("expire_at"), _time("abandon_at"), _text("last_active_organization_id"),
    Column("actor_id", "TEXT", actor_id),
    Column("device", "TEXT", _activity(0)), Column("browser", "TEXT", _activity(1)),
    Column("city", "TEXT", _activity(2)), Column("country", "TEXT", _activity(3)),
    Column("ended_at", "TEXT", _ended_at),
))  # fmt: skip

ROLE = EntitySpec("role", "roles", (_text("key"), _text("name"), _text("description")))

PERMISSION = EntitySpec("permission", "permissions", (
    _text("key"), _text("name"), _text("description"), _text("type"),
))  # fmt: skip

WAITLIST_ENTRY = EntitySpec("waitlistEntry", "waitlist_entries", (
    _text("email_address"), _text("status"), _nested("invitation_id", "invitation", "id"),
))  # fmt: skip

SUBSCRIPTION = EntitySpec("subscription", "subscriptions", (
    _text("status"), _text("payer_id"), _nested("user_id", "payer", "user_id"),
    _nested("organization_id", "payer", "organization_id"),
    _time("active_at"), _time("past_due_at"), _time("canceled_at"), _time("ended_at"),
))  # fmt: skip

SUBSCRIPTION_ITEM = EntitySpec("subscriptionItem", "subscription_items", (
    _text("subscription_id"), _text("status"), _text("plan_id"),
    _nested("plan_name", "plan", "name"), _nested("payer_id", "payer", "id"),
    _flag("is_free_trial"), _time("period_start"), _time("period_end"), _time("canceled_at"),
))  # fmt: skip

PAYMENT_ATTEMPT = EntitySpec("paymentAttempt", "payment_attempts", (
    _text("status"), _text("payment_id"), _nested("payer_id", "payer", "id"),
    _nested("user_id", "payer", "user_id"), _text("charge_type"),
    Column("grand_total", "", _grand_total),  # no affinity: an integer past 64 bits stays text
    Column("currency", "TEXT", _grand_total_currency),
    _time("paid_at"), _time("failed_at"),
))  # fmt: skip

EMAIL = EntitySpec("email", "emails", (
    _text("user_id"), _text("email_address_id"), _text("to_email_address"), _text("slug"),
    _text("status"), _flag("delivered_by_clerk"),
))  # fmt: skip

SMS = EntitySpec("sms", "sms_messages", (
    _text("user_id"), _text("phone_number_id"), _text("to_phone_number"), _text("slug"),
    _text("status"), _flag("delivered_by_clerk"),
))  # fmt: skip

SPECS: tuple[EntitySpec, ...] = (
    USER, ORGANIZATION, MEMBERSHIP, INVITATION, DOMAIN, SESSION, ROLE, PERMISSION,
    WAITLIST_ENTRY, SUBSCRIPTION, SUBSCRIPTION_ITEM, PAYMENT_ATTEMPT, EMAIL, SMS,
)  # fmt: skip
BY_OBJECT_TYPE = {spec.object_type: spec for spec in SPECS}
ENTITY_TABLES = tuple(spec.table for spec in SPECS)
