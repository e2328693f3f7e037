"""``clerk-audit backfill`` (CONTRACT §9) against a stand-in for Clerk's Backend API.

The stand-in is a real HTTP server started by the test, serving ``/v1/users``,
``/v1/organizations`` and each organization's ``/memberships`` and ``/invitations`` with
Clerk's shapes and paging (a bare array for users, ``{"data", "total_count"}`` for the rest,
``limit``/``offset``/``order_by``), and failures scripted per request: 429 with
``Retry-After``, 5xx, 401.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from eventstore.backfill import (
    MAX_ATTEMPTS,
    Backfill,
    ClerkAPI,
    retry_after_s,
    snapshot_id,
    state_path,
)
from eventstore.db import open_store, transaction
from eventstore.engine import sqlite3
from eventstore.errors import BackfillFailed
from eventstore.location import LogLocation, PostgresLog, location_text
from eventstore.log import append_many, event_record
from eventstore.paths import default_projections_path
from projections.files import create_empty
from tests.support import direct
from tests.support.store import query

CLI = Path(sys.executable).with_name("clerk-audit")
KEY = "sk_test_backfill_0123456789"
T0 = 1_700_000_000_000


def user(n: int, updated: int | None = None) -> dict[str, Any]:
    email = f"person{n}@example.com"
    return {
        "id": f"user_{n:027d}", "object": "user", "username": None,
        "first_name": f"Person{n}", "last_name": "Example", "image_url": "https://img.clerk.com/x",
        "has_image": False, "primary_email_address_id": f"idn_{n:027d}",
        "primary_phone_number_id": None, "primary_web3_wallet_id": None,
        "password_enabled": True, "two_factor_enabled": False, "totp_enabled": False,
        "backup_code_enabled": False,
        "email_addresses": [{"id": f"idn_{n:027d}", "object": "email_address",
                             "email_address": email, "reserved": False, "linked_to": [],
                             "verification": {"status": "verified", "strategy": "email_code",
                                              "attempts": 1, "expire_at": T0}}],
        "phone_numbers": [], "web3_wallets": [], "passkeys": [], "external_accounts": [],
        "saml_accounts": [], "public_metadata": {}, "private_metadata": {"n": n},
        "unsafe_metadata": {}, "external_id": None, "last_sign_in_at": T0 + n,
        "banned": False, "locked": False, "lockout_expires_in_seconds": None,
        "verification_attempts_remaining": 100, "create_organization_enabled": True,
        "delete_self_enabled": True, "legal_accepted_at": None, "last_active_at": T0 + n,
        "created_at": T0 + n, "updated_at": updated or T0 + n * 10,
    }  # fmt: skip


def organization(n: int) -> dict[str, Any]:
    return {
        "object": "organization", "id": f"org_{n:027d}", "name": f"Harbor {n}",
        "slug": f"harbor-{n}", "image_url": "https://img.clerk.com/o", "has_image": False,
        "members_count": 3, "pending_invitations_count": 2, "max_allowed_memberships": 5,
        "admin_delete_enabled": True, "public_metadata": {}, "private_metadata": {},
        "created_by": user(0)["id"], "created_at": T0 + n, "updated_at": T0 + n * 7,
    }  # fmt: skip


def membership(org: dict[str, Any], n: int) -> dict[str, Any]:
    member = user(n)
    return {
        "object": "organization_membership", "id": f"orgmem_{org['id'][4:]}{n}",
        "role": "org:admin" if n == 0 else "org:member", "role_name": "Member",
        "permissions": ["org:sys_memberships:read"], "public_metadata": {},
        "private_metadata": {}, "organization": org,
        "public_user_data": {"user_id": member["id"], "first_name": member["first_name"],
                             "last_name": "Example", "image_url": "https://img.clerk.com/x",
                             "has_image": False, "identifier": f"person{n}@example.com"},
        "created_at": T0 + n, "updated_at": T0 + n * 3,
    }  # fmt: skip


def invitation(org: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "object": "organization_invitation", "id": f"orginv_{org['id'][4:]}{n}",
        "email_address": f"invitee{n}@example.com", "role": "org:member", "role_name": "Member",
        "organization_id": org["id"], "status": "pending", "public_metadata": {},
        "private_metadata": {}, "url": None, "expires_at": T0 + 10**9,
        "created_at": T0 + n, "updated_at": T0 + n,
    }  # fmt: skip


@dataclass
class FakeClerk:
    """What the stand-in serves, the failures it has been told to give, what it was asked."""

    users: list[dict[str, Any]] = field(default_factory=list)
    organizations: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[tuple[str, int], list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def fail(self, path: str, offset: int, *answers: tuple[int, dict[str, str]]) -> None:
        self.faults.setdefault((path, offset), []).extend(answers)

    def answer(self, path: str, params: dict[str, str], auth: str | None) -> tuple[int, Any]:
        self.requests.append((path, params))
        if auth != f"Bearer {KEY}":
            return 401, {"errors": [{"message": "Invalid authentication",
                                     "code": "authentication_invalid"}]}  # fmt: skip
        limit, offset = int(params.get("limit", 10)), int(params.get("offset", 0))
        if not 1 <= limit <= 500:
            return 422, {"errors": [{"code": "form_param_value_invalid"}]}
        queued = self.faults.get((path, offset))
        if queued:
            return queued.pop(0)
        listing = self._listing(path)
        if listing is None:
            return 404, {"errors": [{"code": "resource_not_found"}]}
        if params.get("order_by") == "+created_at":
            listing = sorted(listing, key=lambda o: o["created_at"])
        page = listing[offset : offset + limit]
        return 200, page if path == "/v1/users" else {"data": page, "total_count": len(listing)}

    def _listing(self, path: str) -> list[dict[str, Any]] | None:
        if path == "/v1/users":
            return self.users
        if path == "/v1/organizations":
            return self.organizations
        for org in self.organizations:
            n = int(org["id"][4:])
            if path == f"/v1/organizations/{org['id']}/memberships":
                return [membership(org, m) for m in range(n + 2)]
            if path == f"/v1/organizations/{org['id']}/invitations":
                return [invitation(org, m) for m in range(n + 1)]
        return None

    def asked(self, path: str) -> list[int]:
        """The offsets asked of ``path``, in order."""
        return [int(params["offset"]) for p, params in self.requests if p == path]


class Handler(BaseHTTPRequestHandler):
    clerk: FakeClerk

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        status, answer = self.clerk.answer(url.path, params, self.headers.get("authorization"))
        headers: dict[str, str] = {}
        if isinstance(answer, dict) and answer.get("headers"):
            headers = answer.pop("headers")
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def fault(status: int, **headers: str) -> tuple[int, dict[str, Any]]:
    return status, {"errors": [{"code": "scripted"}], "headers": headers}


@pytest.fixture
def clerk() -> Iterator[FakeClerk]:
    fake = FakeClerk(
        users=[user(n) for n in range(1100)], organizations=[organization(n) for n in (1, 2)]
    )
    handler = type("BoundHandler", (Handler,), {"clerk": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


EXPECTED = 1100 + 2 + (3 + 4) + (2 + 3)
"""Users, organizations, memberships and invitations the stand-in holds."""


def clerk_audit(*args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLERK_AUDIT_DB", "CLERK_SECRET_KEY")}
    if key is not None:
        env["CLERK_SECRET_KEY"] = key
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request: pytest.FixtureRequest, db_path: Path) -> LogLocation:
    """An empty log of each kind (the projections file is :func:`projections` either way)."""
    if request.param == "sqlite":
        return db_path
    location: PostgresLog = request.getfixturevalue("pg_log")
    return location


def projections(db_path: Path) -> Path:
    """The tests' projections file, beside the SQLite log's place (the default there)."""
    return default_projections_path(db_path)


def saved(log: LogLocation, db_path: Path) -> Path:
    """Where an unfinished backfill of ``log`` is kept."""
    return state_path(log, projections(db_path))


def where(log: LogLocation, db_path: Path) -> tuple[str, ...]:
    """``--db`` and ``--projections-db`` for ``log``."""
    return "--db", location_text(log), "--projections-db", str(projections(db_path))


def run(
    log: LogLocation,
    clerk: FakeClerk,
    sleeps: list[float] | None = None,
    db_path: Path | None = None,
) -> Backfill:
    """A backfill of ``log`` from the stand-in (``db_path``: the test's store folder, for the
    place of its saved state; the log itself when that is a SQLite file)."""
    api = ClerkAPI(KEY, clerk.url, sleep=(sleeps if sleeps is not None else []).append)
    folder = db_path if db_path is not None else log
    assert isinstance(folder, Path)
    try:
        backfill = Backfill(log, saved(log, folder), api)
        backfill.run()
    finally:
        api.close()
    return backfill


def count(db_path: LogLocation) -> int:
    (row,) = query(db_path, "SELECT count(*) AS n FROM events")
    return int(row["n"])


def test_backfill_pages_through_everything_through_a_429_and_a_503_and_a_rerun_adds_nothing(
    log: LogLocation, db_path: Path, clerk: FakeClerk
) -> None:
    clerk.fail("/v1/users", 500, fault(429, **{"Retry-After": "0"}))
    clerk.fail("/v1/organizations", 0, fault(503))
    done = clerk_audit("backfill", *where(log, db_path), "--api-url", clerk.url)
    assert done.returncode == 0, done.stderr
    assert clerk.asked("/v1/users") == [0, 500, 500, 1000]
    assert clerk.asked("/v1/organizations") == [0, 0]
    assert "GET /v1/users answered HTTP 429; trying again in 0 s" in done.stderr
    assert "GET /v1/organizations answered HTTP 503; trying again in 0.5 s" in done.stderr
    assert "users            1100 read     1100 new events" in done.stdout

    rows = query(log, "SELECT event_id, event_type, object_id, occurred_at FROM events "
                 "ORDER BY position")  # fmt: skip
    assert len(rows) == EXPECTED
    types = {row["event_type"] for row in rows}
    assert types == {
        "user.backfilled",
        "organization.backfilled",
        "organizationMembership.backfilled",
        "organizationInvitation.backfilled",
    }
    first = user(0)
    assert rows[0]["event_id"] == f"backfill_{first['id']}_{first['updated_at']}"
    assert rows[0]["object_id"] == first["id"]
    assert not saved(log, db_path).exists()

    again = clerk_audit("backfill", *where(log, db_path), "--api-url", clerk.url)
    assert again.returncode == 0, again.stderr
    assert "users            1100 read        0 new events" in again.stdout
    assert count(log) == EXPECTED

    projected = clerk_audit("project", *where(log, db_path))
    assert projected.returncode == 0, projected.stderr
    with closing(sqlite3.connect(projections(db_path))) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1100,)
        assert conn.execute("SELECT count(*) FROM organization_memberships").fetchone() == (7,)
        assert conn.execute("SELECT count(*) FROM organization_invitations").fetchone() == (5,)
        (summary,) = conn.execute(
            "SELECT summary FROM audit_timeline WHERE object_id = ?", (first["id"],)
        ).fetchone()
        assert summary == "User Person0 Example backfilled"


def test_a_changed_object_gets_a_new_snapshot_on_the_next_run(
    db_path: Path, clerk: FakeClerk
) -> None:
    clerk.users = [user(1), user(2)]
    clerk.organizations = []
    run(db_path, clerk)
    clerk.users[1] = user(2, updated=T0 + 10**6)
    assert run(db_path, clerk).result.counts["users"].new == 1
    ids = [row["event_id"] for row in query(db_path, "SELECT event_id FROM events")]
    assert ids[-1] == snapshot_id(clerk.users[1]) != ids[1]


def test_429_waits_for_retry_after_and_5xx_backs_off(db_path: Path, clerk: FakeClerk) -> None:
    clerk.users = [user(1)]
    clerk.fail("/v1/users", 0, fault(429, **{"Retry-After": "7"}), fault(502), fault(503),
               fault(429))  # fmt: skip
    sleeps: list[float] = []
    run(db_path, clerk, sleeps)
    assert sleeps == [7.0, 0.5, 1.0, 1.0]  # the last 429 had no Retry-After: backoff
    assert count(db_path) == 1 + EXPECTED - 1100


def test_retry_after_as_a_date() -> None:
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after_s("12", 0) == 12.0
    assert retry_after_s("soon", 0) is None
    assert retry_after_s("100000", 0) == 300.0


def test_a_401_stops_with_a_clear_message_and_stores_nothing(
    db_path: Path, clerk: FakeClerk
) -> None:
    done = clerk_audit("backfill", "--db", str(db_path), "--api-url", clerk.url, key="sk_bad")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("clerk-audit: error: Clerk refused the secret key (GET /v1/users "
                           "answered HTTP 401): check CLERK_SECRET_KEY")  # fmt: skip
    assert clerk.asked("/v1/users") == [0]  # not retried
    assert not db_path.exists() or count(db_path) == 0


def test_no_key_is_a_configuration_error(db_path: Path, clerk: FakeClerk) -> None:
    done = clerk_audit("backfill", "--db", str(db_path), "--api-url", clerk.url, key=None)
    assert done.returncode == 1
    assert "CLERK_SECRET_KEY is not set" in done.stderr
    assert clerk.requests == []


def test_an_interrupted_backfill_resumes_where_it_stopped(
    log: LogLocation, db_path: Path, clerk: FakeClerk
) -> None:
    clerk.fail("/v1/users", 1000, *[fault(500)] * MAX_ATTEMPTS)
    with pytest.raises(BackfillFailed, match="HTTP 500; gave up after 8 tries"):
        run(log, clerk, db_path=db_path)
    assert count(log) == 1000
    assert json.loads(saved(log, db_path).read_text())["users_offset"] == 1000

    clerk.requests.clear()
    resumed = run(log, clerk, db_path=db_path)
    assert resumed.result.resumed
    assert clerk.asked("/v1/users") == [1000]
    assert count(log) == EXPECTED
    assert not saved(log, db_path).exists()


def test_an_interruption_among_organizations_resumes_at_the_next_one(
    db_path: Path, clerk: FakeClerk
) -> None:
    second = clerk.organizations[1]["id"]
    clerk.fail(f"/v1/organizations/{second}/invitations", 0, *[fault(503)] * MAX_ATTEMPTS)
    with pytest.raises(BackfillFailed):
        run(db_path, clerk)
    state = json.loads(saved(db_path, db_path).read_text())
    assert (state["users_offset"], state["organizations_done"]) == (None, 1)

    clerk.requests.clear()
    run(db_path, clerk)
    assert clerk.asked("/v1/users") == []
    first = clerk.organizations[0]["id"]
    assert clerk.asked(f"/v1/organizations/{first}/memberships") == []
    assert count(db_path) == EXPECTED


def append(db_path: Path, event_id: str, event_type: str, data: dict[str, Any]) -> None:
    body = json.dumps({"data": data, "object": "event", "type": event_type,
                       "timestamp": data["updated_at"]}).encode()  # fmt: skip
    with closing(open_store(db_path, create=True)) as conn, transaction(conn):
        record = event_record(event_id=event_id, svix_timestamp=1, received_at="x", body=body)
        append_many(conn, [record])


def project(db_path: Path) -> None:
    projections = default_projections_path(db_path)
    if not projections.exists():
        create_empty(projections)
    with closing(direct.connect(db_path)) as conn:
        direct.project(conn)


def test_the_ordering_rule_decides_between_webhooks_and_backfill(
    db_path: Path, clerk: FakeClerk
) -> None:
    clerk.users, clerk.organizations = [user(1), user(2)], []
    newer = {**user(1), "first_name": "Renamed", "updated_at": user(1)["updated_at"] + 1}
    older = {**user(2), "first_name": "Before", "updated_at": user(2)["updated_at"] - 1}
    append(db_path, "msg_newer", "user.updated", newer)
    append(db_path, "msg_older", "user.created", older)
    run(db_path, clerk)
    project(db_path)
    with closing(direct.connect(db_path)) as conn:
        rows = dict(conn.execute("SELECT id, event_id FROM users").fetchall())
        names = dict(conn.execute("SELECT id, first_name FROM users").fetchall())
    assert rows[newer["id"]] == "msg_newer"  # the webhook's newer updated_at wins
    assert names[newer["id"]] == "Renamed"
    assert rows[older["id"]] == snapshot_id(user(2))  # the backfill's newer snapshot wins
    assert names[older["id"]] == "Person2"


def test_dry_run_reports_the_gaps_and_stores_nothing(db_path: Path, clerk: FakeClerk) -> None:
    clerk.users, clerk.organizations = [user(1), user(2), user(3)], [organization(1)]
    append(db_path, "msg_1", "user.updated", {**user(1), "updated_at": user(1)["updated_at"] - 5})
    append(db_path, "msg_2", "user.updated", user(2))
    project(db_path)
    done = clerk_audit("backfill", "--db", str(db_path), "--api-url", clerk.url, "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        "users: 3 in Clerk, 1 missing from the projections, 1 newer in Clerk",
        f"  missing {user(3)['id']}",
        f"  newer {user(1)['id']}",
    ]
    assert "organizations: 1 in Clerk, 1 missing from the projections, 0 newer in Clerk" in lines
    assert "memberships: 3 in Clerk, 3 missing from the projections, 0 newer in Clerk" in lines
    assert count(db_path) == 2
    assert not saved(db_path, db_path).exists()
