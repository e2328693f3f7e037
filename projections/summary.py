"""One readable sentence per event for ``audit_timeline.summary``.

Built from the event alone, with names where the payload carries them ("Maya Okafor joined
Harbor Analytics as admin") and ids where it does not. One-time codes, subjects and message
bodies of ``email.created`` / ``sms.created`` are never quoted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

from projections.fields import Doc, actor_id, full_name, obj, path_text, text

Summarise = Callable[[str, Doc], str]


@cache
def _words(action: str) -> str:
    """``pastDue`` -> ``past due``."""
    return re.sub(r"(?<!^)([A-Z])", r" \1", action).lower()


def person(doc: Doc | None, fallback: str | None = None) -> str:
    """A person's name from a user-like object, else its username or id."""
    return (
        full_name(doc)
        or text(doc, "username")
        or text(doc, "id")
        or text(doc, "user_id")
        or fallback
        or "?"
    )


def _organization(name: str | None, org_id: str | None) -> str:
    return name or org_id or "an organization"


def _role(role: str | None) -> str:
    return role.removeprefix("org:") if role else "member"


def _user(action: str, d: Doc) -> str:
    if action == "deleted":
        external = text(d, "external_id")
        suffix = f" (external id {external})" if external else ""
        return f"User {text(d, 'id')}{suffix} deleted"
    return f"User {person(d)} {_words(action)}"


def _session(action: str, d: Doc) -> str:
    owner = person(obj(d, "user"), text(d, "user_id"))
    actor = actor_id(d)
    suffix = f" (impersonated by {actor})" if actor else ""
    return f"Session {text(d, 'id')} of {owner} {_words(action)}{suffix}"


def _org(action: str, d: Doc) -> str:
    name = text(d, "name") or text(d, "slug")
    label = f"{name} ({text(d, 'id')})" if action == "deleted" and name else name
    return f"Organization {label or text(d, 'id')} {_words(action)}"


def _membership(action: str, d: Doc) -> str:
    who = person(obj(d, "public_user_data"))
    org = _organization(path_text(d, "organization", "name"), path_text(d, "organization", "id"))
    role = _role(text(d, "role"))
    if action == "created":
        return f"{who} joined {org} as {role}"
    if action == "updated":
        return f"{who} is now {role} in {org}"
    if action == "deleted":
        return f"{who} is no longer a member of {org}"
    return f"Membership of {who} in {org} {_words(action)}"


def _invitation(action: str, d: Doc) -> str:
    email = text(d, "email_address") or text(d, "id")
    org_data = obj(d, "public_organization_data")
    org = _organization(text(org_data, "name"), text(d, "organization_id"))
    if action == "created":
        return f"{email} invited to {org} as {_role(text(d, 'role'))}"
    if action == "accepted":
        return f"{email} accepted the invitation to {org}"
    return f"Invitation of {email} to {org} {_words(action)}"


def _domain(action: str, d: Doc) -> str:
    name = text(d, "name") or text(d, "id")
    org = _organization(
        path_text(d, "public_organization_data", "name"), text(d, "organization_id")
    )
    status = path_text(d, "affiliation_verification", "status")
    suffix = f" ({status})" if status and action != "deleted" else ""
    return f"Domain {name} of {org} {_words(action)}{suffix}"


def _keyed(noun: str) -> Summarise:
    def summarise(action: str, d: Doc) -> str:
        key, name = text(d, "key"), text(d, "name")
        label = f"{name} ({key})" if name and key else key or name or text(d, "id")
        return f"{noun} {label} {_words(action)}"

    return summarise


def _message(noun: str) -> Summarise:
    def summarise(action: str, d: Doc) -> str:
        template = text(d, "slug") or "message"
        recipient = text(d, "user_id") or "no user"
        status = text(d, "status") or _words(action)
        return f"{noun} '{template}' for {recipient} {status}"

    return summarise


def _waitlist(action: str, d: Doc) -> str:
    status = text(d, "status")
    suffix = f" ({status})" if status else ""
    return f"Waitlist entry of {text(d, 'email_address') or text(d, 'id')} {_words(action)}{suffix}"


def _subscription(action: str, d: Doc) -> str:
    payer = person(obj(d, "payer"))
    return f"Subscription {text(d, 'id')} of {payer} {_billing_verb(action)}"


def _subscription_item(action: str, d: Doc) -> str:
    plan = path_text(d, "plan", "name")
    label = f"{plan} plan item" if plan else "Subscription item"
    payer = obj(d, "payer")
    owner = f" of {person(payer)}" if payer else ""
    return f"{label} {text(d, 'id')}{owner} {_billing_verb(action)}"


def _payment(action: str, d: Doc) -> str:
    total = obj(obj(d, "totals"), "grand_total")
    amount = text(total, "amount_formatted")
    currency = text(total, "currency")
    money = f" of {amount} {currency}" if amount and currency else ""
    status = text(d, "status") or _words(action)
    return f"Payment attempt {text(d, 'id')}{money} by {person(obj(d, 'payer'))} {status}"


def _billing_verb(action: str) -> str:
    if action in ("created", "updated"):
        return action
    return f"is now {_words(action)}" if action in ("active", "pastDue") else _words(action)


SUMMARIES: dict[str, Summarise] = {
    "user": _user,
    "session": _session,
    "organization": _org,
    "organizationMembership": _membership,
    "organizationInvitation": _invitation,
    "organizationDomain": _domain,
    "role": _keyed("Role"),
    "permission": _keyed("Permission"),
    "email": _message("Email"),
    "sms": _message("SMS"),
    "waitlistEntry": _waitlist,
    "subscription": _subscription,
    "subscriptionItem": _subscription_item,
    "paymentAttempt": _payment,
}


def summarise(
    event_type: str,
    object_type: str | None,
    action: str | None,
    data: Doc | None,
    other_instance: str | None = None,
) -> str:
    """The sentence for an event (a generic one for types we do not know), with a note when it
    comes from another Clerk instance than the configured one."""
    known = SUMMARIES.get(object_type) if object_type else None
    if known is None or action is None or data is None:
        subject = text(data, "id")
        sentence = f"{event_type} event for {subject}" if subject else f"{event_type} event"
    else:
        sentence = known(action, data)
    if other_instance is not None:
        return f"{sentence} [other instance {other_instance}: not projected]"
    return sentence
