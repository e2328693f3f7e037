"""Whole exports and paged canned queries (``eventstore.datasette_exports``).

The store holds the fixture story plus ``SIGN_INS`` sign-ins of Maya, two at each moment (ties
on ``occurred_at``), so her history has more rows than Datasette's ``max_returned_rows``.
Datasette runs in-process on it with the shipped metadata. What an export must contain is
counted from the events appended and read with SQL written here, not with the plugin's.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from datasette.app import Datasette

from eventstore.cli.datasette import load_metadata
from eventstore.datasette_exports import PAGE_ROWS
from eventstore.datasette_files import StoreFiles, registered
from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path
from eventstore.timefmt import iso_ms
from tests.support.audit_story import SIGN_IN_IP, T0, fixture_events
from tests.support.direct import append_all, new_store
from tests.support.history import envelope

SIGN_INS = 1_234
PAGE_ORDER = "occurred_at DESC, position"
"""How Datasette orders the timeline's pages (its sort, then the primary key)."""
HISTORY_ORDER = "occurred_at DESC, position DESC"
"""How the history queries order their rows."""


def sign_in(n: int) -> tuple[str, bytes]:
    stamp = T0 + 100_000 + (n // 2) * 1000  # two sign-ins a second
    data = {"id": f"sess_x{n:04d}", "object": "session", "user_id": "user_maya",
            "status": "active", "created_at": stamp, "updated_at": stamp}  # fmt: skip
    return f"msg_x{n:04d}", envelope("session.created", data, stamp)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("exports") / "audit.db"
    with closing(new_store(path)) as conn:
        append_all(conn, [*fixture_events(), *(sign_in(n) for n in range(SIGN_INS))])
    yield path


@pytest_asyncio.fixture
async def ds(store: Path) -> AsyncIterator[Datasette]:
    with registered(StoreFiles(store, default_projections_path(store))):
        datasette = Datasette([], metadata=load_metadata())
        await datasette.invoke_startup()
        try:
            yield datasette
        finally:
            for database in datasette.databases.values():
                database.close()


def timeline(
    store: Path, where: str, *params: str, order: str = PAGE_ORDER
) -> list[dict[str, Any]]:
    """Timeline rows by SQL of our own."""
    with closing(sqlite3.connect(default_projections_path(store))) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(f"SELECT * FROM audit_timeline WHERE {where} ORDER BY {order}", params)
        return [dict(row) for row in rows]


def maya(store: Path) -> list[dict[str, Any]]:
    """Maya's history, as user_history orders it."""
    return timeline(store, "user_id = 'user_maya'", order=HISTORY_ORDER)


async def export(ds: Datasette, path: str, **params: str) -> tuple[list[str], list[list[str]]]:
    """The CSV export at ``path``: its header and rows."""
    answer = await ds.client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    header, *rows = csv.reader(io.StringIO(answer.text))
    return header, rows


async def export_json(ds: Datasette, path: str, **params: str) -> list[dict[str, Any]]:
    answer = await ds.client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    found = json.loads(answer.text)
    assert isinstance(found, list)
    return found


HISTORY = {"user_id": "user_maya", "from": "", "to": ""}


@pytest.mark.asyncio
async def test_a_canned_query_exports_every_row_as_csv_and_json(ds: Datasette, store: Path) -> None:
    cut = (await ds.client.get("/audit/user_history.json", params=HISTORY)).json()
    assert len(cut["rows"]) == 1000 and cut["truncated"]  # Datasette's own limit
    expected = maya(store)
    assert len(expected) > SIGN_INS
    header, rows = await export(ds, "/-/clerk-audit/export/audit/user_history.csv", **HISTORY)
    assert header == cut["columns"]
    assert [int(row[-1]) for row in rows] == [row["position"] for row in expected]
    assert [row[:3] for row in rows] == [
        [r["occurred_at"], r["event_type"], r["summary"]] for r in expected
    ]
    found = await export_json(ds, "/-/clerk-audit/export/audit/user_history.json", **HISTORY)
    assert [item["position"] for item in found] == [row["position"] for row in expected]
    assert [item["summary"] for item in found] == [row["summary"] for row in expected]
    assert list(found[0]) == header


@pytest.mark.asyncio
async def test_a_canned_query_export_takes_from_and_to(ds: Datasette, store: Path) -> None:
    window = {"from": iso_ms(T0 + 200_000), "to": iso_ms(T0 + 500_000)}  # 600 sign-ins
    expected = [r for r in maya(store) if window["from"] <= r["occurred_at"] < window["to"]]
    assert 100 < len(expected) < SIGN_INS
    _, rows = await export(ds, "/-/clerk-audit/export/audit/user_history.csv",
                           user_id="user_maya", **window)  # fmt: skip
    assert [int(row[-1]) for row in rows] == [row["position"] for row in expected]


@pytest.mark.asyncio
async def test_the_filtered_timeline_exports_whole(ds: Datasette, store: Path) -> None:
    since = iso_ms(T0 + 100_000)
    expected = timeline(store, "user_id = ? AND occurred_at >= ?", "user_maya", since)
    assert len(expected) > 1000
    path = "/-/clerk-audit/export/audit/audit_timeline"
    filters = {"user_id": "user_maya", "occurred_at__gte": since}
    header, rows = await export(ds, f"{path}.csv", **filters)
    assert header == list(expected[0])
    assert [row[0] for row in rows] == [str(r["position"]) for r in expected]
    found = await export_json(ds, f"{path}.json", **filters, _col="summary")
    assert found == [{"position": r["position"], "summary": r["summary"]} for r in expected]
    searched = await export_json(ds, f"{path}.json", _search=SIGN_IN_IP, event_type="user.updated")
    assert [r["position"] for r in searched] == [
        r["position"] for r in timeline(store, "event_type = 'user.updated'")
    ]


@pytest.mark.asyncio
async def test_a_canned_query_page_shows_its_rows_a_page_at_a_time(ds: Datasette) -> None:
    page = await ds.client.get("/audit/user_history", params=HISTORY)
    assert page.status_code == 200
    assert page.text.count('<td class="col-position">') == PAGE_ROWS
    (next_url,) = re.findall(r'<a href="([^"]+)">Next page</a>', page.text)
    assert "_next=100" in next_url
    assert "/-/clerk-audit/export/audit/user_history.csv?user_id=user_maya" in page.text
    _, everything = await export(ds, "/-/clerk-audit/export/audit/user_history.csv", **HISTORY)
    walked: list[int] = []
    offset = 0
    while True:
        params = {**HISTORY, "_size": "400", "_next": str(offset), "_shape": "array"}
        rows = (await ds.client.get("/audit/user_history.json", params=params)).json()
        walked += [row["position"] for row in rows]
        offset += 400
        if len(rows) < 400:
            break
    assert walked == [int(row[-1]) for row in everything]


@pytest.mark.asyncio
async def test_datasettes_own_links_keep_their_limit(ds: Datasette) -> None:
    page = await ds.client.get("/audit/user_history", params=HISTORY)
    (csv_link,) = re.findall(r'href="(/audit/user_history\.csv[^"]*)"', page.text)
    answer = await ds.client.get(csv_link.replace("&amp;", "&"))
    assert answer.status_code == 200 and answer.text.count("\n") == 1 + 1000
    as_json = await ds.client.get("/audit/user_history.json", params={**HISTORY, "_size": "max"})
    assert len(as_json.json()["rows"]) == 1000 and as_json.json()["truncated"]
    bad = await ds.client.get("/audit/user_history.json", params={**HISTORY, "_size": "many"})
    assert bad.status_code == 400


@pytest.mark.asyncio
async def test_the_last_page_has_no_next_link(ds: Datasette, store: Path) -> None:
    total = len(maya(store))
    last = await ds.client.get("/audit/user_history", params={**HISTORY, "_next": "1200"})
    assert last.text.count('<td class="col-position">') == total - 1200
    assert f"Rows 1,201 to {total:,}" in last.text and "Next page" not in last.text


@pytest.mark.asyncio
async def test_the_timeline_page_links_its_export(ds: Datasette) -> None:
    page = await ds.client.get("/audit/audit_timeline?user_id=user_maya", follow_redirects=True)
    assert page.status_code == 200
    links = re.findall(r'href="(/-/clerk-audit/export/[^"]+)"', page.text)
    assert [link.split("?")[0] for link in links] == [
        "/-/clerk-audit/export/audit/audit_timeline.csv",
        "/-/clerk-audit/export/audit/audit_timeline.json",
    ]
    assert "user_id=user_maya" in links[0] and "_nocol=user_agent" in links[0]


@pytest.mark.asyncio
async def test_an_export_is_streamed_and_stops_when_the_client_goes_away(ds: Datasette) -> None:
    app = ds.app()
    scope = {"type": "http", "method": "GET", "raw_path": b"", "headers": [],
             "path": "/-/clerk-audit/export/audit/user_history.csv",
             "query_string": b"user_id=user_maya&from=&to=", "http_version": "1.1",
             "scheme": "http", "server": ("test", 80), "client": ("test", 1)}  # fmt: skip

    async def run(gone_after: int | None) -> list[bytes]:
        bodies: list[bytes] = []
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()  # until the client goes away
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                bodies.append(message.get("body", b""))
            if gone_after is not None and len(bodies) >= gone_after:
                gone.set()

        await app(scope, receive, send)
        return bodies

    whole = await run(None)
    assert len(whole) > 3 and max(len(b) for b in whole) < 200_000  # a chunk at a time
    assert len(await run(2)) < len(whole)
