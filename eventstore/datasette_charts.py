"""A Datasette 0.65 plugin that draws the audit store's pictures as server-side SVG.

No JavaScript, no CDN, nothing fetched: each page is HTML with inline SVG made here from a
few grouped queries, so it renders the same offline and in a locked-down browser.

* ``/-/clerk-audit/charts``: events per day (every day between the first and the last, zero
  days included; a day's bar opens that day's timeline), deliveries per day by outcome, and
  sign-ins (``session.created``) per day.
* ``/-/clerk-audit/roles/<organization_id>``: who held which role in the organization when,
  one row per member, from ``membership_roles``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from datasette.utils import sqlite_timelimit
from datasette.utils.asgi import Response

from eventstore.datasette_files import LOG, PROJECTIONS, hookimpl

PLUGIN_NAME = "clerk-audit-charts"
BAR, HEIGHT, MARGIN = 12, 140, 40
COLOURS = {
    "stored": "#2f7d32", "duplicate": "#7cb342", "quarantined": "#f9a825", "conflict": "#ef6c00",
    "rejected": "#c62828", "too_large": "#6a1b9a", "unavailable": "#455a64",
}  # fmt: skip
WHOLE_LOG_MS = 10_000
"""The pictures read the whole log (an index each): more than a page's time limit."""
ROLE_COLOURS = ("#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#c62828", "#00838f")

Series = dict[str, dict[str, int]]
"""``{day: {series: count}}``."""


def days_between(first: str, last: str) -> list[str]:
    """Every ``YYYY-MM-DD`` from ``first`` to ``last``, both included."""
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def timeline_of_day(day: str) -> str:
    """The timeline page of one UTC day."""
    query = urlencode({"occurred_at__gte": day, "occurred_at__lt": next_day(day)})
    return f"/{PROJECTIONS}/audit_timeline?{query}"


def bar_chart(title: str, counts: Series, link: bool = False) -> str:
    """An SVG of stacked bars per day, zero days included; ``link``: each bar opens that day's
    timeline."""
    if not counts:
        return f"<h2>{html.escape(title)}</h2><p>Nothing yet.</p>"
    days = days_between(min(counts), max(counts))
    top = max(sum(v.values()) for v in counts.values()) or 1
    width = MARGIN + len(days) * BAR + 70  # room for the last day's label
    axis = f'x1="{MARGIN - 2}" y1="{HEIGHT}" x2="{width}" y2="{HEIGHT}"'
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
        f'height="{HEIGHT + 40}" aria-label="{html.escape(title)}">',
        f'<text x="0" y="12" font-size="11">{top:,}</text>',
        f'<line {axis} stroke="#999"/>',
    ]
    for n, day in enumerate(days):
        parts.append(_bar(MARGIN + n * BAR, day, counts.get(day, {}), top, link))
    for n in sorted({0, len(days) - 1}):
        parts.append(
            f'<text x="{MARGIN + n * BAR}" y="{HEIGHT + 14}" font-size="10">{days[n]}</text>'
        )
    parts.append("</svg>")
    legend = _legend(sorted({s for v in counts.values() for s in v}))
    return f"<h2>{html.escape(title)}</h2>{''.join(parts)}{legend}"


def _bar(x: int, day: str, series: dict[str, int], top: int, link: bool) -> str:
    y, rects = HEIGHT, []
    for name in sorted(series):
        h = max(1, round(series[name] * (HEIGHT - 20) / top))
        y -= h
        colour = COLOURS.get(name, "#1565c0")
        tip = f"<title>{day} {html.escape(name)}: {series[name]:,}</title>"
        rects.append(
            f'<rect x="{x}" y="{y}" width="{BAR - 2}" height="{h}" fill="{colour}">{tip}</rect>'
        )
    if not rects:  # a zero day: a mark on the axis, still clickable
        rects.append(f'<rect x="{x}" y="{HEIGHT - 1}" width="{BAR - 2}" height="1" fill="#bbb">'
                     f"<title>{day}: 0</title></rect>")  # fmt: skip
    body = "".join(rects)
    return f'<a href="{html.escape(timeline_of_day(day))}">{body}</a>' if link else body


def _legend(names: Sequence[str]) -> str:
    if len(names) < 2:
        return ""
    items = " ".join(
        f'<span style="color:{COLOURS.get(n, "#1565c0")}">&#9632;</span> {html.escape(n)}'
        for n in names
    )
    return f"<p>{items}</p>"


def _series(rows: Sequence[Sequence[Any]]) -> Series:
    counts: Series = {}
    for day, name, count in rows:
        if day:
            counts.setdefault(str(day), {})[str(name)] = int(count)
    return counts


EVENTS_PER_DAY = (
    "SELECT substr(occurred_at, 1, 10), 'events', count(*) FROM audit_timeline "
    "WHERE occurred_at IS NOT NULL GROUP BY 1"
)
SIGN_INS_PER_DAY = (
    "SELECT substr(occurred_at, 1, 10), 'sign-ins', count(*) FROM audit_timeline "
    "WHERE event_type = 'session.created' GROUP BY 1"
)
DELIVERIES_PER_DAY = (
    f"SELECT substr(received_at, 1, 10), outcome, count(*) FROM {LOG}.deliveries GROUP BY 1, 2"
)


def page(title: str, body: str) -> Response:
    return Response.html(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1em 2em}svg a rect:hover{opacity:.7}</style>"
        f'</head><body><p><a href="/{PROJECTIONS}">audit</a></p><h1>{html.escape(title)}</h1>'
        f"{body}</body></html>"
    )


async def _whole_log(db: Any, sql: str) -> list[Any]:
    """``sql``'s rows, allowed ``WHOLE_LOG_MS`` (Datasette's ``custom_time_limit`` can only
    shorten its ``sql_time_limit_ms``, a second by default)."""

    def run(conn: Any) -> list[Any]:
        with sqlite_timelimit(conn, WHOLE_LOG_MS):
            return list(conn.execute(sql).fetchall())

    return list(await db.execute_fn(run))


async def charts(datasette: Any) -> Response:
    db = datasette.get_database(PROJECTIONS)
    events = _series(await _whole_log(db, EVENTS_PER_DAY))
    deliveries = _series(await _whole_log(db, DELIVERIES_PER_DAY))
    sign_ins = _series(await _whole_log(db, SIGN_INS_PER_DAY))
    body = (
        bar_chart("Events per day (Clerk's time; click a day for its timeline)", events, True)
        + bar_chart("Deliveries per day by outcome (our clock)", deliveries)
        + bar_chart("Sign-ins per day (session.created)", sign_ins, True)
    )
    return page("Pictures of the audit log", body)


ROLE_ROWS = (
    "SELECT r.user_id, coalesce(u.display_name, r.user_id), r.role, r.valid_from, r.valid_to "
    "FROM membership_roles AS r LEFT JOIN users AS u ON u.id = r.user_id "
    "WHERE r.organization_id = ? ORDER BY 2, r.user_id, r.valid_from"
)


def role_timeline(rows: Sequence[Sequence[Any]], now: str) -> str:
    """An SVG with one row per member and one bar per role interval."""
    if not rows:
        return "<p>No memberships recorded.</p>"
    start = min(str(r[3]) for r in rows)
    end = max([now, *(str(r[4]) for r in rows if r[4])])
    span = _seconds(start, end) or 1.0
    members = list(dict.fromkeys((r[0], r[1]) for r in rows))
    roles = sorted({str(r[2]) for r in rows})
    width, label, row_h = 900, 200, 22
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
             f'height="{row_h * len(members) + 30}" aria-label="role timeline">']  # fmt: skip
    for n, (user_id, name) in enumerate(members):
        y = n * row_h + 4
        href = html.escape(f"/{PROJECTIONS}/user_history?{urlencode({'user_id': user_id})}")
        parts.append(f'<a href="{href}"><text x="0" y="{y + 13}" font-size="12">'
                     f"{html.escape(str(name))}</text></a>")  # fmt: skip
        for _, _, role, since, until in (r for r in rows if r[0] == user_id):
            x0 = label + (width - label - 10) * _seconds(start, str(since)) / span
            x1 = label + (width - label - 10) * _seconds(start, str(until or end)) / span
            colour = ROLE_COLOURS[roles.index(str(role)) % len(ROLE_COLOURS)]
            parts.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" '
                         f'height="{row_h - 6}" fill="{colour}"><title>{html.escape(str(role))}: '
                         f"{since} → {until or 'now'}</title></rect>")  # fmt: skip
    y = row_h * len(members) + 20
    parts.append(f'<text x="{label}" y="{y}" font-size="10">{start[:10]}</text>')
    parts.append(f'<text x="{width - 80}" y="{y}" font-size="10">{end[:10]}</text></svg>')
    legend = " ".join(
        f'<span style="color:{ROLE_COLOURS[n % len(ROLE_COLOURS)]}">&#9632;</span> '
        f"{html.escape(role)}" for n, role in enumerate(roles)
    )  # fmt: skip
    return "".join(parts) + f"<p>{legend}</p>"


def _seconds(start: str, moment: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(moment) - parse(start)).total_seconds()


async def roles(datasette: Any, request: Any) -> Response:
    organization_id = request.url_vars["organization_id"]
    db = datasette.get_database(PROJECTIONS)
    rows = (await db.execute(ROLE_ROWS, [organization_id])).rows
    named = await db.execute("SELECT name FROM organizations WHERE id = ?", [organization_id])
    name = named.rows[0][0] if named.rows and named.rows[0][0] else organization_id
    now = (await db.execute("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")).rows[0][0]
    body = role_timeline([tuple(r) for r in rows], now)
    return page(f"Roles in {name} over time", body)


class AuditCharts:
    """The plugin (see module doc)."""

    def __init__(self) -> None:
        self.__name__ = PLUGIN_NAME

    @hookimpl
    def register_routes(self) -> list[tuple[str, Any]]:
        return [
            (r"^/-/clerk-audit/charts$", charts),
            (r"^/-/clerk-audit/roles/(?P<organization_id>[^/]+)$", roles),
        ]

    @hookimpl
    def menu_links(self) -> list[dict[str, str]]:
        return [{"href": "/-/clerk-audit/charts", "label": "Pictures"}]
