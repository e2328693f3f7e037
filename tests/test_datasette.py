"""Datasette over a real store: metadata, labels, facets, canned queries, and nothing writes.

The store is filled once per module by the real ingest server (``clerk-audit serve``), with
every shipped sample signed by svix, plus a few deliveries the samples lack: a duplicate, an
impersonated session, two quarantined bodies and four refused requests; its projector writes
the projections file. Datasette then runs in-process (``Datasette([]).client``) on both files,
served by our plugin as ``audit`` (the projections) and ``log``, with the shipped
``data/metadata.yml``.

What each canned query should return is derived from the sample bodies with the rules of the
fixtures' story (which user or organization an event is about, Clerk's timestamps), not read
back from the projections the queries run on.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from datasette.app import Datasette

from eventstore.cli.datasette import load_metadata
from eventstore.datasette_files import LOG, PROJECTIONS, StoreFiles, registered
from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path
from eventstore.samples import sample_body, sample_event_id, sample_names
from projections import rebuild
from tests.support.server import running_server
from tests.support.signing import new_event_id, new_secret
from tests.support.store import dump

README = Path(__file__).resolve().parents[1] / "README.md"
BODY_LIMIT = 16_384
"""``CLERK_AUDIT_MAX_BODY_BYTES`` for the story's server: above every sample, so one test body
can be too large without sending a megabyte."""

Doc = dict[str, Any]
DOCS: dict[str, Doc] = {name: json.loads(sample_body(name)) for name in sample_names()}
MAYA = DOCS["user.created"]["data"]["id"]
TOMAS = DOCS["session.pending"]["data"]["user_id"]
HARBOR = DOCS["organization.created"]["data"]["id"]
DELETED_USER = DOCS["user.deleted"]["data"]["id"]
SIGN_IN_IP = DOCS["session.created"]["event_attributes"]["http_request"]["client_ip"]
SESSION = DOCS["session.created"]["data"]["id"]
IMPERSONATION_IP = "198.51.100.99"


# --------------------------------------------------------------------------- the story ---


def iso(ms: int) -> str:
    """Unix ms as ISO-8601 UTC text with ms, as the projections write times."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def kind(doc: Doc) -> str:
    return str(doc["type"]).split(".")[0]


def user_of(doc: Doc) -> str | None:
    """The user an event is about, by the story's rules: the user itself; the session's,
    message's or invitation's user; the member; the payer's user; an organization's creator."""
    data, what = doc["data"], kind(doc)
    if what == "user":
        return _text(data.get("id"))
    if what in ("session", "email", "sms", "organizationInvitation"):
        return _text(data.get("user_id"))
    if what == "organizationMembership":
        return _text((data.get("public_user_data") or {}).get("user_id"))
    if what in ("subscription", "subscriptionItem", "paymentAttempt"):
        return _text((data.get("payer") or {}).get("user_id"))
    if doc["type"] == "organization.created":
        return _text(data.get("created_by"))
    return None


def organization_of(doc: Doc) -> str | None:
    data, what = doc["data"], kind(doc)
    if what == "organization":
        return _text(data.get("id"))
    if what == "organizationMembership":
        return _text((data.get("organization") or {}).get("id"))
    if what in ("organizationInvitation", "organizationDomain"):
        return _text(data.get("organization_id"))
    if what == "session":
        return _text(data.get("last_active_organization_id"))
    if what in ("subscription", "subscriptionItem", "paymentAttempt"):
        return _text((data.get("payer") or {}).get("organization_id"))
    return None


def client_ip(doc: Doc) -> str | None:
    return _text(doc.get("event_attributes", {}).get("http_request", {}).get("client_ip"))


def full_name(data: Doc) -> str:
    return f"{data['first_name']} {data['last_name']}"


def latest_user_name(user_id: str) -> str:
    """The user's name in their newest full snapshot (user.updated renamed Maya)."""
    snapshots = [
        d["data"] for d in DOCS.values() if kind(d) == "user" and d["data"].get("id") == user_id
    ]
    return full_name(
        max((s for s in snapshots if "first_name" in s), key=lambda s: s["updated_at"])
    )


def impersonation_body() -> bytes:
    """A session Maya opened as Tomás (``actor.sub``), active for another week."""
    doc = copy.deepcopy(DOCS["session.created"])
    now = int(time.time() * 1000)
    data = doc["data"]
    data.update(
        id="sess_impersonated0000000000001", user_id=TOMAS, status="active",
        actor={"sub": MAYA, "iss": "https://dashboard.clerk.com"}, created_at=now,
        updated_at=now, last_active_at=now, expire_at=now + 7 * 86_400_000,
        abandon_at=now + 30 * 86_400_000, user=None,
    )  # fmt: skip
    doc["timestamp"] = now
    doc["event_attributes"]["http_request"]["client_ip"] = IMPERSONATION_IP
    return json.dumps(doc).encode()


@dataclass
class Story:
    db_path: Path
    """The log."""
    stored: dict[str, Doc] = field(default_factory=dict)
    """Every event stored with status ok, by event_id."""
    positions: dict[str, int] = field(default_factory=dict)
    quarantined: list[tuple[str, bytes]] = field(default_factory=list)
    refused: list[tuple[str, str | None]] = field(default_factory=list)
    """(outcome, event_id) of the requests that stored nothing, in the order they were sent."""
    impersonation: str = ""

    def ordered(self, event_ids: list[str]) -> list[str]:
        """Newest first by occurred_at (Clerk's time), then by position."""
        return sorted(
            event_ids,
            key=lambda e: (iso(self.stored[e]["timestamp"]), self.positions[e]),
            reverse=True,
        )

    def where(self, keep: Any) -> list[str]:
        return self.ordered([e for e, doc in self.stored.items() if keep(doc)])

    @property
    def projections_path(self) -> Path:
        return default_projections_path(self.db_path)

    def files(self) -> dict[str, Path]:
        """The file of each database Datasette serves."""
        return {PROJECTIONS: self.projections_path, LOG: self.db_path}


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    db_path = tmp_path_factory.mktemp("story") / "audit.db"
    env = {"CLERK_AUDIT_MAX_BODY_BYTES": str(BODY_LIMIT)}
    told = Story(db_path)
    with (
        running_server(db_path, new_secret(), env=env) as server,
        httpx.Client(timeout=30) as client,
    ):
        for name in sample_names():
            event_id, body = sample_event_id(name), sample_body(name)
            answer = server.post(event_id, body, client=client)
            assert answer.status_code == 200 and answer.json()["status"] == "stored"
            told.stored[event_id], told.positions[event_id] = DOCS[name], answer.json()["position"]
        again = server.post(sample_event_id("user.created"), sample_body("user.created"))
        assert again.json()["status"] == "duplicate"

        told.impersonation = new_event_id()
        body = impersonation_body()
        answer = server.post(told.impersonation, body, client=client)
        assert answer.status_code == 200 and answer.json()["status"] == "stored"
        told.stored[told.impersonation] = json.loads(body)
        told.positions[told.impersonation] = answer.json()["position"]

        for body in (b"not json at all", b"[1, 2]"):
            event_id = new_event_id()
            answer = server.post(event_id, body, client=client)
            assert answer.status_code == 200 and answer.json()["status"] == "quarantined"
            told.quarantined.append((event_id, body))

        forged = new_event_id()
        answer = server.post(forged, sample_body("user.created"), secret=new_secret())
        assert answer.status_code == 400
        told.refused.append(("rejected", forged))
        answer = client.post(server.ingest_url, content=sample_body("user.created"))
        assert answer.status_code == 400
        told.refused.append(("rejected", None))
        answer = server.post(sample_event_id("user.created"), sample_body("user.updated"))
        assert answer.status_code == 409
        told.refused.append(("conflict", sample_event_id("user.created")))
        huge = new_event_id()
        padding = b"x" * BODY_LIMIT
        answer = server.post(huge, b'{"type": "user.created", "pad": "' + padding + b'"}')
        assert answer.status_code == 413
        told.refused.append(("too_large", huge))
        server.wait_projected()
    yield told


def _close(datasette: Datasette) -> None:
    for database in datasette.databases.values():
        database.close()
    if datasette.executor is not None:
        datasette.executor.shutdown(wait=True)


@asynccontextmanager
async def served(story: Story, metadata: dict[str, Any], **kwargs: Any) -> AsyncIterator[Datasette]:
    """An in-process Datasette on the story's two files, as ``clerk-audit datasette`` serves
    them (our plugin registered for the block)."""
    with registered(StoreFiles(story.db_path, story.projections_path)):
        datasette = Datasette([], metadata=metadata, **kwargs)
        await datasette.invoke_startup()
        try:
            yield datasette
        finally:
            _close(datasette)


@pytest.fixture(scope="module")
def metadata() -> dict[str, Any]:
    return load_metadata()


@pytest_asyncio.fixture
async def ds(story: Story, metadata: dict[str, Any]) -> AsyncIterator[Datasette]:
    async with served(story, metadata) as datasette:
        yield datasette


async def rows(ds: Datasette, path: str, **params: str) -> list[Doc]:
    response = await ds.client.get(f"/audit/{path}.json", params={**params, "_shape": "array"})
    assert response.status_code == 200, response.text
    return list(response.json())


def schema(db_path: Path) -> dict[str, list[str]]:
    """Every table and view of the store (not SQLite's own) with its columns."""
    conn = sqlite3.connect(db_path)
    try:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite%' AND name NOT GLOB '*_fts_*' ORDER BY name"
            )
        ]
        return {
            n: [c[1] for c in conn.execute(f"PRAGMA table_xinfo({n})") if not c[-1]] for n in names
        }
    finally:
        conn.close()


def snapshot(story: Story) -> list[str]:
    """Both files as SQL text: schema and every row."""
    dumps = []
    for path in story.files().values():
        dumps.append(dump(path))
    return dumps


# ---------------------------------------------------------------------- the metadata ---


@pytest.mark.asyncio
async def test_every_table_view_and_column_has_a_description(ds: Datasette, story: Story) -> None:
    real = {name: schema(path) for name, path in story.files().items()}
    assert {"events", "deliveries"} <= set(real[LOG])
    assert {"audit_timeline", "users", "current_memberships", "projection_errors"} <= set(
        real[PROJECTIONS]
    )
    missing = []
    for database, tables in real.items():
        for table, columns in tables.items():
            table_metadata = ds.table_metadata(database, table)
            if not str(table_metadata.get("description", "")).strip():
                missing.append(f"{database}/{table}")
            described = table_metadata.get("columns", {})
            missing += [
                f"{database}/{table}.{c}" for c in columns if not str(described.get(c, "")).strip()
            ]
    assert missing == []


def test_the_metadata_describes_nothing_that_does_not_exist(
    story: Story, metadata: dict[str, Any]
) -> None:
    assert set(metadata["databases"]) == {PROJECTIONS, LOG}
    for database, path in story.files().items():
        real = schema(path)
        tables = metadata["databases"][database]["tables"]
        assert set(tables) <= set(real), database
        stale = [
            f"{database}/{table}.{column}"
            for table, options in tables.items()
            for column in options.get("columns", {})
            if column not in real[table]
        ]
        assert stale == []


def test_the_metadata_uses_one_vocabulary(metadata: dict[str, Any]) -> None:
    columns = {
        (table, column): text
        for database in metadata["databases"].values()
        for table, options in database["tables"].items()
        for column, text in options.get("columns", {}).items()
    }
    assert "svix-id" in columns["events", "event_id"]
    assert "svix-id" in columns["audit_timeline", "event_id"]
    assert "Log order" in columns["events", "position"]
    assert "Clerk's time" in columns["events", "occurred_at"]
    assert "Clerk's time" in columns["audit_timeline", "occurred_at"]
    assert columns["events", "received_at"].startswith("Ours")
    assert columns["deliveries", "received_at"].startswith("Ours")


@pytest.mark.asyncio
async def test_the_instance_and_the_pages_show_the_descriptions(ds: Datasette) -> None:
    index = await ds.client.get("/")
    assert index.status_code == 200
    assert "Clerk audit log" in index.text
    assert "verified and stored by clerk-audit" in index.text  # the source
    page = await ds.client.get("/audit/audit_timeline", follow_redirects=True)
    summary = ds.table_metadata("audit", "audit_timeline")["columns"]["summary"]
    assert page.status_code == 200 and summary.replace("'", "&#39;") in page.text
    assert 'href="?_col=occurred_at' in page.text  # the key-columns link


async def hidden_tables(ds: Datasette, database: str) -> tuple[set[str], set[str]]:
    """(every table, the hidden ones) of ``database``."""
    listed = (await ds.client.get(f"/{database}.json")).json()["tables"]
    return {t["name"] for t in listed}, {t["name"] for t in listed if t["hidden"]}


@pytest.mark.asyncio
async def test_internal_tables_are_hidden(ds: Datasette) -> None:
    projections, hidden = await hidden_tables(ds, PROJECTIONS)
    assert {"_projection_meta", "entity_versions", "audit_timeline_fts_0"} <= hidden
    assert all(h.startswith(("_", "entity_", "audit_timeline_fts_")) for h in hidden)
    assert {"audit_timeline", "projection_errors"} <= projections
    assert "events" not in projections
    log, hidden = await hidden_tables(ds, LOG)
    assert {"events", "deliveries", "_sqlite_migrations"} <= log
    assert hidden == {"_sqlite_migrations"}


@pytest.mark.asyncio
async def test_a_rebuild_shows_without_a_restart(
    story: Story, metadata: dict[str, Any], tmp_path: Path
) -> None:
    """``clerk-audit rebuild`` swaps in a new generation file; the next request reads it."""
    log = tmp_path / "audit.db"
    source, target = sqlite3.connect(story.db_path), sqlite3.connect(log)
    source.backup(target)
    source.close()
    target.close()
    copy = Story(log)
    rebuild(log, copy.projections_path)
    async with served(copy, metadata) as datasette:
        before = await rows(datasette, "audit_timeline", _size="max")
        first = datasette.databases[PROJECTIONS].path
        rebuild(log, copy.projections_path)
        after = await rows(datasette, "audit_timeline", _size="max")
        assert datasette.databases[PROJECTIONS].path != first
        assert not Path(first).exists()  # the old generation is gone, yet nothing failed
    assert after == before and len(after) == len(story.stored)


@pytest.mark.asyncio
async def test_ids_link_to_readable_names(ds: Datasette, story: Story) -> None:
    """Every declared reference shows the referenced user's display_name or the
    organization's name as its label."""
    conn = sqlite3.connect(story.projections_path)
    labels = {
        "users": dict(conn.execute("SELECT id, display_name FROM users")),
        "organizations": dict(conn.execute("SELECT id, name FROM organizations")),
    }
    references = [
        (table, fk[3], fk[2])
        for table in schema(story.projections_path)
        for fk in conn.execute(f"PRAGMA foreign_key_list({table})")
    ]
    conn.close()
    assert {column for _, column, _ in references} == {
        "user_id", "organization_id", "created_by", "inviter_id", "actor_id",
        "last_active_organization_id",
    }  # fmt: skip
    seen = Counter[str]()
    for table, column, target in references:
        for row in await rows(ds, table, _labels="on", _size="max"):
            cell = row[column]
            if isinstance(cell, dict) and cell["value"] in labels[target]:
                assert cell["label"] == labels[target][cell["value"]], (table, column)
                seen[target] += cell["label"] is not None
    assert seen["users"] > 0 and seen["organizations"] > 0
    (row,) = await rows(ds, "audit_timeline", event_id=sample_event_id("organization.created"),
                        _labels="on")  # fmt: skip
    assert row["user_id"] == {"value": MAYA, "label": latest_user_name(MAYA)}
    organization = DOCS["organization.updated"]["data"]
    assert row["organization_id"] == {"value": HARBOR, "label": organization["name"]}


@pytest.mark.asyncio
async def test_the_timeline_is_newest_first_with_facets(ds: Datasette, story: Story) -> None:
    response = await ds.client.get(
        "/audit/audit_timeline.json?_shape=objects&_size=max&_facet_size=max"
    )
    body = response.json()
    assert [r["event_id"] for r in body["rows"]] == story.ordered(list(story.stored))
    facets = body["facet_results"]
    assert set(facets) == {"event_type", "organization_id", "occurred_at"}
    assert facets["occurred_at"]["type"] == "day"
    days = [f["value"] for f in facets["occurred_at"]["results"]]
    assert days == sorted(days, reverse=True)  # in date order, newest first
    by_type = {f["value"]: f["count"] for f in facets["event_type"]["results"]}
    assert by_type == Counter(doc["type"] for doc in story.stored.values())
    by_day = {f["value"]: f["count"] for f in facets["occurred_at"]["results"]}
    assert by_day == Counter(iso(doc["timestamp"])[:10] for doc in story.stored.values())
    by_org = {f["value"]: f["count"] for f in facets["organization_id"]["results"]}
    assert by_org[HARBOR] == sum(organization_of(d) == HARBOR for d in story.stored.values())


# -------------------------------------------------------------------- canned queries ---

PARAMS: dict[str, dict[str, str]] = {
    "user_history": {"user_id": MAYA, "from": "", "to": ""},
    "organization_history": {"organization_id": HARBOR, "from": "", "to": ""},
    "membership_changes": {"organization_id": HARBOR, "from": "", "to": ""},
    "organization_members": {"organization_id": HARBOR},
    "sessions_for_user": {"user_id": TOMAS, "from": "", "to": ""},
    "sign_ins_from_ip": {"client_ip": SIGN_IN_IP, "from": "", "to": ""},
    "object_history": {"object_id": SESSION, "from": "", "to": ""},
    "impersonations": {},
    "deleted_users": {},
    "rejected_deliveries": {},
    "quarantined_events": {},
    "events_per_day": {},
    "user_changes": {"user_id": MAYA, "from": "", "to": ""},
    "object_changes": {"object_id": HARBOR, "from": "", "to": ""},
    "organization_members_as_of": {"organization_id": HARBOR, "at": "2030-01-01T00:00:00Z"},
    "who_had_role": {"role": "admin", "at": "2030-01-01T00:00:00Z"},
    "sign_ins_for_user": {"user_id": TOMAS, "from": "", "to": ""},
}
"""Every canned query and the parameters it is tested with."""


def test_every_canned_query_is_tested_and_declares_its_parameters(
    metadata: dict[str, Any],
) -> None:
    queries = metadata["databases"]["audit"]["queries"]
    assert set(queries) == set(PARAMS)
    for name, query in queries.items():
        named = set(re.findall(r"(?<!:):([a-z]\w*)", query["sql"]))  # :_page_… are magic
        assert set(query.get("params", [])) == named == set(PARAMS[name]), name
        assert query["title"] and query["description"], name


@pytest.mark.asyncio
async def test_user_history(ds: Datasette, story: Story) -> None:
    found = await rows(ds, "user_history", user_id=MAYA)
    expected = story.where(lambda doc: user_of(doc) == MAYA)
    assert [r["event_id"] for r in found] == expected
    types = {r["event_type"] for r in found}
    assert {"user.created", "session.created", "organization.created", "email.created"} <= types
    assert "session.pending" not in types  # Tomás's
    assert [r["occurred_at"] for r in found] == [
        iso(story.stored[e]["timestamp"]) for e in expected
    ]
    summaries = {r["event_type"]: r["summary"] for r in found}
    assert summaries["user.created"] == f"User {full_name(DOCS['user.created']['data'])} created"
    joined = DOCS["organizationMembership.created"]["data"]
    assert summaries["organizationMembership.created"] == (
        f"{full_name(joined['public_user_data'])} joined {joined['organization']['name']} as "
        f"{joined['role'].removeprefix('org:')}"
    )
    (created,) = [r for r in found if r["event_type"] == "organization.created"]
    assert created["organization"] == DOCS["organization.updated"]["data"]["name"]


@pytest.mark.asyncio
async def test_organization_history(ds: Datasette, story: Story) -> None:
    found = await rows(ds, "organization_history", organization_id=HARBOR)
    assert [r["event_id"] for r in found] == story.where(lambda d: organization_of(d) == HARBOR)
    users = {(r["user_id"], r["user"]) for r in found if r["user_id"]}
    assert users == {(MAYA, latest_user_name(MAYA)), (TOMAS, None)}  # no user.* event for Tomás


@pytest.mark.asyncio
async def test_membership_changes(ds: Datasette, story: Story) -> None:
    found = await rows(ds, "membership_changes", organization_id=HARBOR)
    expected = story.where(
        lambda d: (
            organization_of(d) == HARBOR
            and kind(d) in ("organizationMembership", "organizationInvitation")
        )
    )
    assert [r["event_id"] for r in found] == expected
    by_type = {r["event_type"]: r for r in found}
    assert by_type["organizationMembership.updated"]["member"] == TOMAS
    assert by_type["organizationMembership.created"]["member"] == latest_user_name(MAYA)
    invited = DOCS["organizationInvitation.created"]["data"]
    assert by_type["organizationInvitation.created"]["member"] == invited["email_address"]
    assert by_type["organizationInvitation.created"]["inviter"] == latest_user_name(
        invited["inviter_id"]
    )
    removal = DOCS["organizationMembership.deleted"]
    assert by_type["organizationMembership.deleted"]["client_ip"] == client_ip(removal)


@pytest.mark.asyncio
async def test_organization_members(ds: Datasette) -> None:
    memberships: dict[str, Doc] = {}
    deleted = set()
    for doc in DOCS.values():
        if kind(doc) == "organizationMembership":
            memberships[doc["data"]["id"]] = doc["data"]
            if doc["type"].endswith(".deleted"):
                deleted.add(doc["data"]["id"])
    current = [
        m for key, m in memberships.items()
        if key not in deleted and m["organization"]["id"] == HARBOR
    ]  # fmt: skip
    found = await rows(ds, "organization_members", organization_id=HARBOR)
    assert [(r["user_id"], r["member"], r["role"]) for r in found] == [
        (m["public_user_data"]["user_id"], latest_user_name(MAYA), m["role"]) for m in current
    ]
    assert (
        found[0]["email_address"]
        == DOCS["user.created"]["data"]["email_addresses"][0]["email_address"]
    )


@pytest.mark.asyncio
async def test_sessions_for_user_with_effective_status(ds: Datasette, story: Story) -> None:
    sessions = {
        doc["data"]["id"]: doc["data"]
        for doc in story.stored.values()
        if kind(doc) == "session" and doc["data"]["user_id"] == TOMAS
    }
    now = iso(int(time.time() * 1000))

    def effective(data: Doc) -> str:
        status = str(data["status"])
        if status in ("active", "pending") and iso(data["expire_at"]) <= now:
            return "expired"
        return status

    found = await rows(ds, "sessions_for_user", user_id=TOMAS)
    newest_first = sorted(sessions.values(), key=lambda s: s["created_at"], reverse=True)
    assert [(r["session_id"], r["reported_status"], r["effective_status"]) for r in found] == [
        (s["id"], s["status"], effective(s)) for s in newest_first
    ]
    assert {r["effective_status"] for r in found} >= {"active", "revoked"}
    impersonated = next(r for r in found if r["impersonated_by"])
    assert impersonated["impersonated_by"] == MAYA
    assert impersonated["client_ip"] == IMPERSONATION_IP


@pytest.mark.asyncio
async def test_sign_ins_from_ip(ds: Datasette, story: Story) -> None:
    found = await rows(ds, "sign_ins_from_ip", client_ip=SIGN_IN_IP)
    expected = story.where(lambda d: kind(d) == "session" and client_ip(d) == SIGN_IN_IP)
    assert [r["event_id"] for r in found] == expected
    assert {r["event_type"] for r in found} >= {"session.created", "session.ended"}
    assert {r["user"] for r in found} == {latest_user_name(MAYA)}


@pytest.mark.asyncio
async def test_object_history(ds: Datasette, story: Story) -> None:
    found = await rows(ds, "object_history", object_id=SESSION)
    assert [r["event_id"] for r in found] == story.where(lambda d: d["data"].get("id") == SESSION)
    assert [r["event_type"] for r in found] == ["session.ended", "session.created"]


@pytest.mark.asyncio
async def test_impersonations(ds: Datasette, story: Story) -> None:
    found = await rows(ds, "impersonations")
    assert [r["event_id"] for r in found] == [story.impersonation]
    assert found[0]["impersonated_by"] == latest_user_name(MAYA)
    assert found[0]["as_user"] == TOMAS


@pytest.mark.asyncio
async def test_deleted_users(ds: Datasette) -> None:
    stub = DOCS["user.deleted"]
    (found,) = await rows(ds, "deleted_users")
    assert found["user_id"] == DELETED_USER
    assert found["deleted_at"] == iso(stub["timestamp"])
    assert found["external_id"] == stub["data"]["external_id"]  # read from the delete event
    assert found["deleted_by_event"] == sample_event_id("user.deleted")
    assert found["client_ip"] == client_ip(stub)


@pytest.mark.asyncio
async def test_rejected_deliveries(ds: Datasette, story: Story) -> None:
    found = await rows(ds, "rejected_deliveries")
    assert [(r["outcome"], r["event_id"]) for r in found] == story.refused[::-1]
    assert all(r["reason"] for r in found)
    iso_seconds = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    times = {r["outcome"]: r["svix_time"] for r in found}
    assert iso_seconds.fullmatch(times["conflict"])  # the signed svix-timestamp, as ISO text
    assert all(t is None or iso_seconds.fullmatch(t) for t in times.values())


@pytest.mark.asyncio
async def test_quarantined_events(ds: Datasette, story: Story) -> None:
    found = await rows(ds, "quarantined_events")
    assert [(r["event_id"], r["body_bytes"]) for r in found] == [
        (event_id, len(body)) for event_id, body in story.quarantined[::-1]
    ]
    assert all(r["quarantine_reason"] for r in found)


@pytest.mark.asyncio
async def test_events_per_day(ds: Datasette, story: Story) -> None:
    found = await rows(ds, "events_per_day")
    days = Counter(iso(doc["timestamp"])[:10] for doc in story.stored.values())
    assert [(r["day"], r["events"]) for r in found] == sorted(days.items(), reverse=True)
    day = iso(DOCS["user.created"]["timestamp"])[:10]
    (that_day,) = [r for r in found if r["day"] == day]
    assert that_day["users"] == len(
        {user_of(d) for d in story.stored.values() if iso(d["timestamp"])[:10] == day} - {None}
    )


# ------------------------------------------------------------------ nothing writes ---


def _keys(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


@pytest.mark.asyncio
async def test_no_canned_query_writes(ds: Datasette, story: Story) -> None:
    assert "write" not in set(_keys(load_metadata()))
    listed = (await ds.client.get("/audit.json")).json()["queries"]
    assert {q["name"] for q in listed} == set(PARAMS)
    assert not any(q.get("write") for q in listed)
    before = snapshot(story)
    for name, params in PARAMS.items():
        got = await ds.client.get(f"/audit/{name}.json", params=params)
        assert got.status_code == 200, name
        # No cookie, so no CSRF check: the POST reaches the canned query. Datasette 0.65 runs
        # only write queries on POST; a read one fails (500), and nothing is written either way.
        posted = await ds.client.post(f"/audit/{name}", data=params)
        assert posted.status_code >= 400, name
    assert snapshot(story) == before


@pytest.mark.parametrize(
    "sql",
    [
        "delete from events",
        "delete from log.events",
        "insert into log.deliveries (outcome) values ('stored')",
        "delete from audit_timeline",
        "update users set display_name = 'x'",
        "select 1; delete from events",
        "attach database 'x.db' as x",
    ],
)
@pytest.mark.asyncio
async def test_arbitrary_sql_cannot_write(ds: Datasette, story: Story, sql: str) -> None:
    before = snapshot(story)
    for database in (PROJECTIONS, LOG):
        response = await ds.client.get(f"/{database}.json", params={"sql": sql})
        assert response.status_code == 400
    assert snapshot(story) == before


# ------------------------------------------------------------ the README's lock-down ---


def readme_lockdown() -> dict[str, Any]:
    """The YAML the README tells you to add before exposing Datasette."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Read the audit history in Datasette", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    loaded = yaml.safe_load(block)
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.asyncio
async def test_the_readme_lockdown_works(
    story: Story, metadata: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = new_secret()
    monkeypatch.setenv("CLERK_AUDIT_DATASETTE_TOKEN", token)
    locked = {**metadata, **readme_lockdown()}
    async with served(story, locked, settings={"default_allow_sql": False}) as datasette:
        client = datasette.client
        bearer = {"Authorization": f"Bearer {token}"}
        root = {"ds_actor": datasette.sign({"a": {"id": "root"}}, "actor")}
        assert (await client.get("/audit/audit_timeline.json")).status_code == 403
        wrong = {"Authorization": f"Bearer {new_secret()}"}
        assert (await client.get("/audit/audit_timeline.json", headers=wrong)).status_code == 403
        assert (await client.get("/audit/audit_timeline.json", headers=bearer)).status_code == 200
        history = await client.get("/audit/user_history.json", params=PARAMS["user_history"],
                                   headers=bearer)  # fmt: skip
        assert history.status_code == 200 and history.json()["rows"]
        sql = await client.get("/audit.json", params={"sql": "select 1"}, headers=bearer)
        assert sql.status_code == 403
        assert (await client.get("/audit/users?_col=id", cookies=root)).status_code == 200
        assert (await client.get("/log/events.json")).status_code == 403
        export = "/-/clerk-audit/export/audit/user_history.csv"
        assert (await client.get(export, params=PARAMS["user_history"])).status_code == 403
        answer = await client.get(export, params=PARAMS["user_history"], headers=bearer)
        assert answer.status_code == 200 and answer.text.count("\n") > 1
        timeline = "/-/clerk-audit/export/audit/audit_timeline.json"
        assert (await client.get(timeline)).status_code == 403


def test_the_story_covers_what_the_queries_look_for(story: Story) -> None:
    """The expectations above are not vacuous."""
    assert len(story.where(lambda d: user_of(d) == MAYA)) >= 10
    assert len(story.where(lambda d: organization_of(d) == HARBOR)) >= 8
    assert {o for o, _ in story.refused} == {"rejected", "conflict", "too_large"}


@pytest.mark.asyncio
async def test_integrity_shows_the_head_the_last_checkpoint_and_the_last_verify(
    ds: Datasette, story: Story, tmp_path: Path
) -> None:
    cli = Path(sys.executable).with_name("clerk-audit")
    for args in (("checkpoint", "--out", str(tmp_path / "cp.json")), ("verify",)):
        done = subprocess.run([str(cli), *args, "--db", str(story.db_path)], capture_output=True)
        assert done.returncode == 0, done.stderr
    response = await ds.client.get("/log/integrity.json", params={"_shape": "array"})
    assert response.status_code == 200, response.text
    (found,) = response.json()
    head = json.loads((tmp_path / "cp.json").read_text())
    assert (found["head_position"], found["head_chain"]) == (head["position"], head["chain"])
    assert found["last_checkpoint_position"] == head["position"]
    assert found["last_checkpoint_signed"] == "unsigned"
    assert (found["last_verify_position"], found["last_verify_ok"]) == (head["position"], 1)
    assert found["last_verify_at"] >= found["last_checkpoint_at"]
