"""The who, where and what of one event, for its ``audit_timeline`` row.

Everything here reads the event alone (never other events or the current state), so a
timeline row is the same however and whenever the event arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from projections.fields import (
    Doc,
    actor_id,
    find_by_id,
    obj,
    path_text,
    session_activity,
    text,
)
from projections.summary import summarise

Fields = tuple[Any, ...]
"""``summary, actor_id, user_id, organization_id, client_ip, device, browser, city, country,
user_agent, email``."""
_NO_ACTIVITY = (None, None, None, None)

_USER_ID: dict[str, Callable[[Doc], str | None]] = {
    "user": lambda d: text(d, "id"),
    "session": lambda d: text(d, "user_id"),
    "organizationMembership": lambda d: path_text(d, "public_user_data", "user_id"),
    "organizationInvitation": lambda d: text(d, "user_id"),
    "email": lambda d: text(d, "user_id"),
    "sms": lambda d: text(d, "user_id"),
    "subscription": lambda d: path_text(d, "payer", "user_id"),
    "subscriptionItem": lambda d: path_text(d, "payer", "user_id"),
    "paymentAttempt": lambda d: path_text(d, "payer", "user_id"),
}

_ORGANIZATION_ID: dict[str, Callable[[Doc], str | None]] = {
    "organization": lambda d: text(d, "id"),
    "organizationMembership": lambda d: path_text(d, "organization", "id"),
    "organizationInvitation": lambda d: text(d, "organization_id"),
    "organizationDomain": lambda d: text(d, "organization_id"),
    "session": lambda d: text(d, "last_active_organization_id"),
    "subscription": lambda d: path_text(d, "payer", "organization_id"),
    "subscriptionItem": lambda d: path_text(d, "payer", "organization_id"),
    "paymentAttempt": lambda d: path_text(d, "payer", "organization_id"),
}


def _primary_email(user: Doc | None) -> str | None:
    addresses = user.get("email_addresses") if user else None
    return find_by_id(addresses, text(user, "primary_email_address_id"), "email_address")


_EMAIL: dict[str, Callable[[Doc], str | None]] = {
    "user": _primary_email,
    "session": lambda d: _primary_email(obj(d, "user")),
    "organizationMembership": lambda d: path_text(d, "public_user_data", "identifier"),
    "organizationInvitation": lambda d: text(d, "email_address"),
    "waitlistEntry": lambda d: text(d, "email_address"),
    "email": lambda d: text(d, "to_email_address"),
}


def email(object_type: str | None, data: Doc | None) -> str | None:
    """The email address the event names (the user's primary one, the invited one, …)."""
    extract = _EMAIL.get(object_type) if data and object_type else None
    return extract(data) if extract and data else None


def user_id(object_type: str | None, action: str | None, data: Doc | None) -> str | None:
    """The user the event is about (for ``organization.created``, its creator)."""
    if data is None or object_type is None:
        return None
    if object_type == "organization" and action == "created":
        return text(data, "created_by")
    extract = _USER_ID.get(object_type)
    return extract(data) if extract else None


def organization_id(object_type: str | None, data: Doc | None) -> str | None:
    extract = _ORGANIZATION_ID.get(object_type) if data and object_type else None
    return extract(data) if extract and data else None


def timeline_fields(
    object_type: str | None,
    action: str | None,
    event_type: str,
    doc: Doc,
    data: Doc | None,
    other_instance: str | None = None,
) -> Fields:
    request = obj(obj(doc, "event_attributes"), "http_request")
    is_session = object_type == "session"
    return (
        summarise(event_type, object_type, action, data, other_instance),
        actor_id(data) if is_session else None,
        user_id(object_type, action, data),
        organization_id(object_type, data),
        text(request, "client_ip"),
        *(session_activity(data) if is_session else _NO_ACTIVITY),
        text(request, "user_agent"),
        email(object_type, data),
    )
