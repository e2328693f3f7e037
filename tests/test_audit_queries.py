"""The auditor's canned queries and ``clerk-audit state`` return exact rows on a fixture history.

The store is built through the real ingest route (``clerk-audit serve``, svix-signed), newest
event first, so every "previous" snapshot arrives late. Datasette runs in-process on it with
the shipped metadata.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from datasette.app import Datasette

from eventstore.cli.datasette import load_metadata
from eventstore.datasette_files import StoreFiles, registered
from eventstore.paths import default_projections_path
from eventstore.timefmt import iso_ms
from tests.support.audit_story import SIGN_IN_IP, T0, at, fixture_events
from tests.support.server import CLI, running_server
from tests.support.signing import new_secret


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    db_path = tmp_path_factory.mktemp("auditor") / "audit.db"
    with running_server(db_path, new_secret()) as server, httpx.Client(timeout=30) as client:
        for event_id, body in reversed(fixture_events()):
            assert server.post(event_id, body, client=client).json()["status"] == "stored"
        server.wait_projected()
    yield db_path


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
            if datasette.executor is not None:
                datasette.executor.shutdown(wait=True)


async def query(ds: Datasette, name: str, **params: str) -> list[tuple[Any, ...]]:
    answer = await ds.client.get(f"/audit/{name}.json", params={**params, "_shape": "arrays"})
    assert answer.status_code == 200, answer.text
    return [tuple(row) for row in answer.json()["rows"]]


@pytest.mark.asyncio
async def test_user_changes(ds: Datasette) -> None:
    found = await query(ds, "user_changes", user_id="user_maya", **{"from": at(2), "to": at(4)})
    assert [row[:4] for row in found] == [
        (at(3), "password", None, "(secret)"),
        (at(3), "password_enabled", "no", "yes"),
        (at(3), "private_metadata", None, "(secret)"),
        (at(2), "banned", "yes", "no"),
        (at(2), "totp_enabled", "no", "yes"),
        (at(2), "two_factor_enabled", "no", "yes"),
    ]
    assert found[0][4] == "User Maya Okafor: password set"
    everything = await query(ds, "user_changes", user_id="user_maya", **{"from": "", "to": ""})
    assert len(everything) == 10


@pytest.mark.asyncio
async def test_object_changes(ds: Datasette) -> None:
    found = await query(ds, "object_changes", object_id="orgmem_1", **{"from": "", "to": ""})
    assert found == [
        (at(9), "organizationMembership", "deleted", "no", "yes", "msg_08"),
        (at(5), "organizationMembership", "role", "org:member", "org:admin", "msg_07"),
    ]


@pytest.mark.asyncio
async def test_organization_members_as_of(ds: Datasette) -> None:
    def members(moment: str) -> Any:
        return query(ds, "organization_members_as_of", organization_id="org_h", at=moment)

    assert await members(at(0)) == []
    assert await members(at(3)) == [
        ("user_maya", "Maia Okafor", "org:member", at(1), at(5), "orgmem_1")
    ]
    assert await members(at(5)) == [
        ("user_maya", "Maia Okafor", "org:admin", at(5), at(9), "orgmem_1")
    ]
    assert await members(at(9)) == []


@pytest.mark.asyncio
async def test_who_had_role(ds: Datasette) -> None:
    expected = [("org_h", "Harbor", "user_maya", "Maia Okafor", "org:admin", at(5), at(9))]
    assert await query(ds, "who_had_role", role="admin", at=at(6)) == expected
    assert await query(ds, "who_had_role", role="org:admin", at=at(6)) == expected
    assert await query(ds, "who_had_role", role="admin", at=at(4)) == []


@pytest.mark.asyncio
async def test_sign_ins_for_user(ds: Datasette) -> None:
    found = await query(ds, "sign_ins_for_user", user_id="user_maya", **{"from": "", "to": ""})
    assert found == [
        (at(6), None, "active", "iPhone", "Safari 18.1", "Abuja", "NG", SIGN_IN_IP, None,
         "sess_2"),
        (iso_ms(T0 + 1500), at(7), "ended", "iPhone", "Safari 18.1", "Lagos", "NG", SIGN_IN_IP,
         None, "sess_1"),
    ]  # fmt: skip
    assert await query(ds, "sign_ins_for_user", user_id="user_maya", **{"from": at(5), "to": ""})
    assert await query(ds, "sign_ins_for_user", user_id="nobody", **{"from": "", "to": ""}) == []
    timeline = await ds.client.get(
        "/audit/audit_timeline.json",
        params={"object_id": "sess_1", "_shape": "objects", "_sort": "position"},
    )
    cities = {(r["event_type"], r["city"], r["device"]) for r in timeline.json()["rows"]}
    assert cities == {("session.created", "Lagos", "iPhone"), ("session.ended", "Lagos", "iPhone")}


def state(store: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(CLI), "state", "--db", str(store), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_state_of_a_user_as_of(store: Path) -> None:
    then = state(store, "--as-of", at(1), "--user", "user_maya")
    assert then["user"]["first_name"] == "Maya" and then["user"]["banned"] == 1
    assert then["banned_since"] == at(1)
    assert then["memberships"] == [
        {"organization_id": "org_h", "role": "org:member", "role_since": at(1),
         "membership_id": "orgmem_1"}
    ]  # fmt: skip
    later = state(store, "--as-of", at(6), "--user", "user_maya")
    assert later["user"]["first_name"] == "Maia" and later["banned_since"] is None
    assert [m["role"] for m in later["memberships"]] == ["org:admin"]
    assert state(store, "--as-of", "2000-01-01", "--user", "user_maya")["user"] is None


def test_state_of_an_organization_and_the_overview(store: Path) -> None:
    harbor = state(store, "--as-of", at(6), "--organization", "org_h")
    assert harbor["organization"]["name"] == "Harbor"
    assert [(m["user_id"], m["role"]) for m in harbor["members"]] == [("user_maya", "org:admin")]
    assert state(store, "--as-of", at(10), "--organization", "org_h")["members"] == []
    overview = state(store, "--as-of", at(6))
    assert {k: overview[k] for k in ("users", "organizations", "memberships", "banned_users")} == {
        "users": 1, "organizations": 1, "memberships": 1, "banned_users": 0,
    }  # fmt: skip


def test_state_refuses_a_time_that_is_not_iso(store: Path) -> None:
    done = subprocess.run(
        [str(CLI), "state", "--db", str(store), "--as-of", "yesterday"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "not an ISO-8601 time" in done.stderr


@pytest.mark.asyncio
async def test_the_timeline_search_finds_an_email_an_ip_an_id_and_an_event_type(
    ds: Datasette,
) -> None:
    async def search(text: str) -> set[str]:
        answer = await ds.client.get(
            "/audit/audit_timeline.json",
            params={"_search": text, "_shape": "objects", "_size": "max"},
        )
        assert answer.status_code == 200, answer.text
        return {row["event_id"] for row in answer.json()["rows"]}

    assert await search("maia@example.com") == {"msg_05"}
    assert await search('"session.ended"') == {"msg_11"}
    assert await search("orgmem_1") == {"msg_06", "msg_07", "msg_08"}
    assert len(await search(SIGN_IN_IP)) == len(fixture_events())
    assert await search("banned") == {"msg_02"}
    assert await search("nobody@example.com") == set()


# ----------------------------------------------------------- navigation and pictures ---


async def page(ds: Datasette, path: str) -> str:
    answer = await ds.client.get(path, follow_redirects=True)
    assert answer.status_code == 200, (path, answer.text[:500])
    return str(answer.text)


@pytest.mark.asyncio
async def test_a_user_page_links_to_history_sign_ins_and_changes(ds: Datasette) -> None:
    html = await page(ds, "/audit/users/user_maya")
    for href in (
        "/audit/user_history?user_id=user_maya",
        "/audit/sign_ins_for_user?user_id=user_maya",
        "/audit/user_changes?user_id=user_maya",
    ):
        assert f'href="{href}"' in html
    html = await page(ds, "/audit/organizations/org_h")
    assert 'href="/audit/organization_members_as_of?organization_id=org_h"' in html
    assert 'href="/-/clerk-audit/roles/org_h"' in html


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "path", ["/audit/users/user_maya", "/audit/organizations/org_h",
             "/audit/organization_memberships/orgmem_1"],
)  # fmt: skip
async def test_a_row_page_folds_the_snapshot(ds: Datasette, path: str) -> None:
    html = await page(ds, path)
    (cell,) = re.findall(r'<td class="col-data[^"]*">(.*?)</td>', html, re.DOTALL)
    assert cell.startswith("<details><summary>JSON, ") and '<pre class="snapshot">{' in cell
    assert "<details open" not in cell and cell.count("\n") > 5  # folded, whole inside
    assert re.search(r'href="/audit/(user|organization|object)_history\?', html)


@pytest.mark.asyncio
async def test_tables_open_readable(ds: Datasette) -> None:
    answer = await ds.client.get("/audit/users")
    assert answer.status_code == 302
    assert "_nocol=data" in answer.headers["location"]
    html = await page(ds, "/audit/users")
    assert 'scope="col" data-column="version_rank"' not in html  # no such column header
    assert 'data-column="display_name"' in html
    assert '<td class="col-banned type-int">no</td>' in html
    assert "(deleted before capture)" in html
    assert (await ds.client.get("/audit/users.json")).status_code == 200  # no redirect


@pytest.mark.asyncio
async def test_the_timeline_links_ids_names_and_the_raw_event(ds: Datasette) -> None:
    html = await page(ds, "/audit/audit_timeline?object_id=sess_1")
    assert '<a href="/audit/user_history?user_id=user_maya">Maia Okafor</a>' in html
    assert 'href="/audit/object_history?object_id=sess_1"' in html
    position = (await query(ds, "object_history", object_id="sess_1", **{"from": "", "to": ""}))[0][
        -1
    ]
    assert f'href="/log/events/{position}"' in html
    raw = await page(ds, f"/log/events/{position}")
    assert '<pre class="event-body">{\n  &#34;data&#34;: {' in raw or (
        '<pre class="event-body">{\n  &quot;data&quot;: {' in raw
    )


@pytest.mark.asyncio
async def test_the_pictures_render_svg(ds: Datasette) -> None:
    html = await page(ds, "/-/clerk-audit/charts")
    assert html.count("<svg") == 3 and "<rect" in html and "<script" not in html
    day = at(0)[:10]
    assert f'href="/audit/audit_timeline?occurred_at__gte={day}&amp;occurred_at__lt=' in html
    roles = await page(ds, "/-/clerk-audit/roles/org_h")
    assert roles.count("<rect") == 2 and "org:member" in roles and "org:admin" in roles


@pytest.mark.asyncio
async def test_the_pictures_may_take_longer_than_a_page(ds: Datasette) -> None:
    """They read the whole log: Datasette's per-query limit must not cut them short."""
    from datasette.database import QueryInterrupted

    from eventstore.datasette_charts import _whole_log

    ds.sql_time_limit_ms = 1
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) "
    slow += "SELECT count(*) FROM c"
    db = ds.get_database("audit")
    with pytest.raises(QueryInterrupted):
        await db.execute(slow, custom_time_limit=10_000)  # what the pictures did
    assert [tuple(row) for row in await _whole_log(db, slow)] == [(200000,)]


def test_a_day_chart_shows_the_days_without_events() -> None:
    from eventstore.datasette_charts import bar_chart

    svg = bar_chart("t", {"2026-08-01": {"events": 2}, "2026-08-04": {"events": 1}}, link=True)
    for day in ("2026-08-01", "2026-08-02", "2026-08-03", "2026-08-04"):
        assert f"occurred_at__gte={day}&amp;" in svg
    assert svg.count("<title>") == 4 and "2026-08-02: 0" in svg
