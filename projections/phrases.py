"""Naming the security-relevant changes of a version in its timeline sentence.

"User Maya Okafor updated" says nothing; "User Maya Okafor: banned; two-factor authentication
turned on" does. The phrases come from the tracked fields that differ from the previous
snapshot in version order (``projections.history``); a version with none keeps its own
sentence (``projections.summary``). Secrets are named as changed, never quoted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Diff = tuple[str, Any, Any]
Phrase = Callable[[Any, Any], str | None]


def _switch(on: str, off: str) -> Phrase:
    def phrase(before: Any, after: Any) -> str | None:
        if after == "yes":
            return on
        return off if before == "yes" else None

    return phrase


def _from_to(what: str) -> Phrase:
    def phrase(before: Any, after: Any) -> str | None:
        if before is None:
            return f"{what} set to {after}"
        if after is None:
            return f"{what} {before} removed"
        return f"{what} changed from {before} to {after}"

    return phrase


def _secret(what: str) -> Phrase:
    def phrase(before: Any, after: Any) -> str | None:
        if after is None:
            return f"{what} removed"
        return f"{what} set" if before is None else f"{what} changed"

    return phrase


def _role(before: Any, after: Any) -> str:
    def bare(role: Any) -> str:
        return str(role).removeprefix("org:") if role else "member"

    return f"role changed from {bare(before)} to {bare(after)}"


_USER: dict[str, Phrase] = {
    "banned": _switch("banned", "unbanned"),
    "locked": _switch("locked", "unlocked"),
    "two_factor_enabled": _switch(
        "two-factor authentication turned on", "two-factor authentication turned off"
    ),
    "totp_enabled": _switch("authenticator app added", "authenticator app removed"),
    "backup_code_enabled": _switch("backup codes turned on", "backup codes turned off"),
    "primary_email_address": _from_to("primary email"),
    "primary_phone_number": _from_to("primary phone"),
    "password_enabled": _switch("password set", "password removed"),
    "password": _secret("password"),
    "username": _from_to("username"),
}
_PHRASES: dict[str, dict[str, Phrase]] = {
    "user": _USER,
    "organizationMembership": {"role": _role},
    "organization": {"name": _from_to("name"), "slug": _from_to("slug")},
    "role": {"permissions": lambda b, a: "permissions changed"},
}
_NAME = ("first_name", "last_name")


def _full(fields: dict[str, Any]) -> str | None:
    return " ".join(n for n in (fields.get(k) for k in _NAME) if n) or None


def phrases(
    object_type: str, previous: dict[str, Any], current: dict[str, Any], diffs: Sequence[Diff]
) -> list[str]:
    """The security-relevant changes among ``diffs`` (``previous`` -> ``current``), in words,
    each once."""
    known = _PHRASES.get(object_type, {})
    found: list[str] = []
    for field, before, after in diffs:
        phrase = known.get(field)
        if phrase is not None and (said := phrase(before, after)) is not None:
            found.append(said)
    if object_type == "user" and any(field in _NAME for field, _, _ in diffs):
        found.append(f"name changed from {_full(previous) or '(none)'} to "
                     f"{_full(current) or '(none)'}")  # fmt: skip
    return list(dict.fromkeys(found))


def sentence(
    object_type: str, action: str | None, own: str,
    previous: dict[str, Any], current: dict[str, Any], diffs: Sequence[Diff],
) -> str:  # fmt: skip
    """``own`` (the event's sentence) with the security-relevant changes named."""
    said = phrases(object_type, previous, current, diffs)
    if not said:
        return own
    if action == "updated" and own.endswith(" updated"):
        return f"{own.removesuffix(' updated')}: {'; '.join(said)}"
    return f"{own} ({'; '.join(said)})"
