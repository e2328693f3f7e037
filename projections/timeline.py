"""The who, where and what of one event, for its ``audit_timeline`` row.

Everything here reads the event alone (never other events or the current state), so a
timeline row is the same however and whenever the event arrived.
"""

from __future__ import annotations

from collections.abc import Callable

from projections.fields import Doc, actor_id, obj, path_text, text
from projections.summary import summarise

Fields = tuple[str | None, str | None, str | None, str | None, str | None, str]
"""``user_id, organization_id, actor_id, client_ip, user_agent, summary``."""

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
    actor = actor_id(data) if object_type == "session" else None
    return (
        user_id(object_type, action, data),
        organization_id(object_type, data),
        actor,
        text(request, "client_ip"),
        text(request, "user_agent"),
        summarise(event_type, object_type, action, data, other_instance),
    )
