"""Tolerant reads from a parsed Clerk body (plain ``dict``s from orjson).

Real payloads drift: a field may be missing, null, or of another JSON type than documented.
Every accessor here answers ``None`` instead of raising, so a projection never fails on data.
The log was parsed strictly enough at ingest (``eventstore.envelope``); the fold reads plain
dicts because a rebuild parses every event again and must be fast.
"""

from __future__ import annotations

from typing import Any

from eventstore.timefmt import iso_ms, normalise_ms

Doc = dict[str, Any]


def obj(doc: Doc | None, key: str) -> Doc | None:
    """``doc[key]`` if it is a JSON object."""
    value = doc.get(key) if doc else None
    return value if isinstance(value, dict) else None


def text(doc: Doc | None, key: str) -> str | None:
    """``doc[key]`` if it is a non-empty string."""
    value = doc.get(key) if doc else None
    return value if isinstance(value, str) and value else None


def ms(doc: Doc | None, key: str) -> int | None:
    """``doc[key]`` as integer ms (seconds are scaled), if it is a usable timestamp."""
    return normalise_ms(doc.get(key)) if doc else None


def iso(doc: Doc | None, key: str) -> str | None:
    """``doc[key]`` as ISO-8601 UTC text with ms."""
    value = ms(doc, key)
    return iso_ms(value) if value is not None else None


def flag(doc: Doc | None, key: str) -> int | None:
    """``doc[key]`` as 0/1 if it is a boolean."""
    value = doc.get(key) if doc else None
    return int(value) if isinstance(value, bool) else None


INT64 = range(-(2**63), 2**63)


def number(doc: Doc | None, key: str) -> int | float | str | None:
    """``doc[key]`` if it is a JSON number (not a boolean); an integer past 64 bits as its
    decimal text, which SQLite keeps exact (it has no larger integer)."""
    value = doc.get(key) if doc else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return str(value) if type(value) is int and value not in INT64 else value


def path_text(doc: Doc | None, *keys: str) -> str | None:
    """The string at ``doc[k1][k2]...``."""
    for key in keys[:-1]:
        doc = obj(doc, key)
    return text(doc, keys[-1])


def find_by_id(items: object, wanted: str | None, key: str) -> str | None:
    """``item[key]`` of the object in the list ``items`` whose ``id`` is ``wanted``."""
    if wanted is None or not isinstance(items, list):
        return None
    for item in items:
        if isinstance(item, dict) and item.get("id") == wanted:
            return text(item, key)
    return None


def full_name(doc: Doc | None) -> str | None:
    """``first_name`` and ``last_name`` of a user-like object, whichever are present."""
    names = [name for name in (text(doc, "first_name"), text(doc, "last_name")) if name]
    return " ".join(names) or None


def actor_id(session: Doc | None) -> str | None:
    """The impersonating user of a session (``actor.sub``), if any."""
    return path_text(session, "actor", "sub")


def session_activity(session: Doc | None) -> tuple[str | None, str | None, str | None, str | None]:
    """``(device, browser, city, country)`` of a session's ``latest_activity``, as Clerk
    reports it (the browser with its version)."""
    activity = obj(session, "latest_activity")
    if activity is None:
        return None, None, None, None
    browser = " ".join(p for p in (text(activity, "browser_name"),
                                   text(activity, "browser_version")) if p)  # fmt: skip
    return (
        text(activity, "device_type"), browser or None, text(activity, "city"),
        text(activity, "country"),
    )  # fmt: skip
