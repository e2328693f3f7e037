"""A Datasette 0.65 plugin that makes the audit pages readable and navigable without SQL.

* **Links.** Every Clerk id in a cell (``user_…``, ``org_…``, ``sess_…``, …) links to that
  object's history (``user_history``, ``organization_history``, else ``object_history``); a
  user's or an organization's own ``id`` cell also links to its sessions, changes and members.
  A timeline row's ``event_id`` links to the raw event in the log, whose body reads as indented
  JSON.
* **Names.** User ids inside a sentence are replaced by the user's name where it is known.
* **Readable values.** Flags read ``yes``/``no``; an entity known only from a delete stub shows
  "(deleted before capture)" for its name.
* **Readable defaults.** A table page opened without ``_col``/``_nocol`` hides the bookkeeping
  columns (``data``, ``event_id``, ``version_ms``, ``version_rank``): a redirect adds ``_nocol``
  for them, so they stay one click (or one query) away. A row page (which takes no ``_nocol``)
  folds an entity's ``data`` snapshot under a one-line summary, as the log's event bodies.
* **Day facets in date order** (``facets: [{day: occurred_at}]``), each day linking to that
  day's rows.

Registered with the store's plugin (``eventstore.datasette_files``) by ``clerk-audit
datasette``; it reads only what the page already shows, plus one indexed lookup of names per
sentence.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from datasette.facets import DateFacet
from markupsafe import Markup
from starlette.types import ASGIApp, Receive, Scope, Send

from eventstore.datasette_files import PROJECTIONS, hookimpl

PLUGIN_NAME = "clerk-audit-pages"
CLERK_ID = re.compile(r"\b(?:user|org|orgmem|orginv|orgdmn|sess|role|perm|client|sub|subi|"
                      r"payatt|ema|sms|wle|idn|rol)_[A-Za-z0-9]+\b")  # fmt: skip
FLAGS = frozenset({"deleted", "banned", "locked", "delivered_by_clerk", "is_free_trial"})
BOOKKEEPING = ("data", "event_id", "version_ms", "version_rank")
_LABELS = {"users": "display_name", "organizations": "name"}
_ENTITY_TABLES_WITH_BOOKKEEPING = frozenset({
    "users", "organizations", "organization_memberships", "organization_invitations",
    "organization_domains", "sessions", "roles", "permissions", "waitlist_entries",
    "subscriptions", "subscription_items", "payment_attempts", "emails", "sms_messages",
})  # fmt: skip


def history_url(clerk_id: str) -> str:
    """The history page of a Clerk id."""
    if clerk_id.startswith("user_"):
        return f"/{PROJECTIONS}/user_history?{urlencode({'user_id': clerk_id})}"
    if clerk_id.startswith("org_"):
        return f"/{PROJECTIONS}/organization_history?{urlencode({'organization_id': clerk_id})}"
    return f"/{PROJECTIONS}/object_history?{urlencode({'object_id': clerk_id})}"


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def _query(name: str, **params: str) -> str:
    return f"/{PROJECTIONS}/{name}?{urlencode(params)}"


_OWN_LINKS: dict[str, Callable[[str], list[tuple[str, str]]]] = {
    "users": lambda i: [
        ("history", history_url(i)),
        ("sign-ins", _query("sign_ins_for_user", user_id=i)),
        ("changes", _query("user_changes", user_id=i)),
        ("sessions", _query("sessions_for_user", user_id=i)),
    ],
    "organizations": lambda i: [
        ("history", history_url(i)),
        ("members", _query("organization_members", organization_id=i)),
        ("members at a moment", _query("organization_members_as_of", organization_id=i)),
        ("membership changes", _query("membership_changes", organization_id=i)),
        ("roles over time", f"/-/clerk-audit/roles/{i}"),
    ],
}


def _own_id(table: str, value: str) -> Markup:
    links = " · ".join(_link(href, text) for text, href in _OWN_LINKS[table](value))
    return Markup(f"{html.escape(value)} <small>({links})</small>")


def _pretty_json(value: bytes | str, css: str = "event-body") -> Markup | None:
    """``value`` as indented JSON, folded under a one-line summary (opened by a click)."""
    try:
        pretty = orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return None
    size = len(value) if isinstance(value, bytes) else len(value.encode())
    return Markup(
        f"<details><summary>JSON, {size:,} bytes</summary>"
        f'<pre class="{css}">{html.escape(pretty)}</pre></details>'
    )


NAMES_TTL_S = 2.0
"""How long a user's name is reused across cells: a page of a thousand sentences about one user
looks the name up once, and a rename shows within seconds."""
_names: dict[str, tuple[str | None, float]] = {}


async def _user_names(datasette: Any, database: str, users: list[str]) -> dict[str, str]:
    """``{user_id: display name}`` for those of ``users`` with a known name."""
    now = time.monotonic()
    if len(_names) > 10_000:
        _names.clear()
    missing = [u for u in users if _names.get(u, (None, 0.0))[1] < now]
    if missing:
        marks = ", ".join("?" * len(missing))
        rows = await datasette.get_database(database).execute(
            f"SELECT id, display_name FROM users WHERE id IN ({marks})", missing
        )
        found = {row[0]: row[1] for row in rows}
        for user in missing:
            _names[user] = (found.get(user), now + NAMES_TTL_S)
    return {u: name for u in users if (name := _names[u][0])}


async def _named(datasette: Any, database: str, text: str) -> Markup:
    """``text`` with each Clerk id linked, user ids shown as the user's name where known."""
    ids = sorted(set(CLERK_ID.findall(text)))
    users = [i for i in ids if i.startswith("user_")]
    names = await _user_names(datasette, database, users) if users else {}
    parts, last = [], 0
    for match in CLERK_ID.finditer(text):
        parts.append(html.escape(text[last : match.start()]))
        found = match.group(0)
        parts.append(_link(history_url(found), names.get(found, found)))
        last = match.end()
    parts.append(html.escape(text[last:]))
    return Markup("".join(parts))


def render(row: Any, value: Any, column: str, table: str | None) -> Markup | str | None:
    """The cell's HTML, or None for Datasette's own rendering (everything but the sentence)."""
    if table == "events" and column == "body" and isinstance(value, bytes):
        return _pretty_json(value)
    if table in _ENTITY_TABLES_WITH_BOOKKEEPING and column == "data" and isinstance(value, str):
        return _pretty_json(value, "snapshot")  # a row page: one line, not ninety
    if table == "audit_timeline" and column == "event_id" and isinstance(value, str):
        return Markup(_link(f"/log/events/{row['position']}", value))
    if table in _OWN_LINKS and column == "id" and isinstance(value, str):
        return _own_id(table, value)
    if column in FLAGS and value in (0, 1):
        return "yes" if value else "no"
    if value is None and table in _LABELS and column == _LABELS[table]:
        known = _keys(row)  # a row from a delete stub alone: deleted, never created
        stub = known.get("deleted") == 1 and known.get("created_at", 1) is None
        return "(deleted before capture)" if stub else None
    if isinstance(value, str) and CLERK_ID.fullmatch(value):
        return Markup(_link(history_url(value), value))
    return None


def _keys(row: Any) -> dict[str, Any]:
    try:
        return dict(zip(row.keys(), row, strict=True))
    except (AttributeError, TypeError):
        return {}


class DayFacet(DateFacet):  # type: ignore[misc]
    """Datasette's date facet, its days newest first instead of by count."""

    type = "day"

    async def facet_results(self) -> tuple[list[dict[str, Any]], list[str]]:
        results, timed_out = await super().facet_results()
        for result in results:
            result["results"].sort(key=lambda r: str(r["value"]), reverse=True)
        return results, timed_out


def _hide_bookkeeping(scope: Scope) -> str | None:
    """Where to redirect a table page opened without column choices, if anywhere."""
    parts = scope["path"].strip("/").split("/")
    if scope.get("method") != "GET" or len(parts) != 2 or parts[0] != PROJECTIONS:
        return None
    if parts[1] not in _ENTITY_TABLES_WITH_BOOKKEEPING and parts[1] != "audit_timeline":
        return None
    query = scope.get("query_string", b"").decode()
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key in ("_col", "_nocol") for key, _ in pairs):
        return None
    hidden = BOOKKEEPING if parts[1] != "audit_timeline" else ("object_type", "user_agent")
    pairs += [("_nocol", column) for column in hidden]
    return f"{scope['path']}?{urlencode(pairs)}"


class AuditPages:
    """The plugin (see module doc)."""

    def __init__(self) -> None:
        self.__name__ = PLUGIN_NAME

    @hookimpl
    def render_cell(
        self, row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any
    ) -> Any:
        if column == "summary" and isinstance(value, str) and CLERK_ID.search(value):
            return _named(datasette, PROJECTIONS if database == PROJECTIONS else database, value)
        return render(row, value, column, table)

    @hookimpl
    def register_facet_classes(self) -> list[type]:
        return [DayFacet]

    @hookimpl
    def asgi_wrapper(self, datasette: Any) -> Callable[[ASGIApp], ASGIApp]:
        def wrap(app: ASGIApp) -> ASGIApp:
            async def readable(scope: Scope, receive: Receive, send: Send) -> None:
                target = _hide_bookkeeping(scope) if scope["type"] == "http" else None
                if target is None:
                    await app(scope, receive, send)
                    return
                headers = [(b"location", target.encode()), (b"content-length", b"0")]
                await send({"type": "http.response.start", "status": 302, "headers": headers})
                await send({"type": "http.response.body", "body": b""})

            return readable

        return wrap
