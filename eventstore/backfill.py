"""``clerk-audit backfill``: what Clerk held before the webhooks, from its Backend API (§9).

A store started on the day the webhooks were configured misses every user, organization,
membership and invitation that existed before. Backfill pages through Clerk's Backend API
(``GET /v1/users``, ``/v1/organizations``, and per organization ``/memberships`` and
``/invitations``; 500 a page, oldest first where the API can sort) and appends each object to
the log as a **snapshot event**:

* its body is ``{"data": <the object as Clerk sent it>, "object": "event", "type":
  "<resource>.backfilled"}``: ``user.backfilled``, ``organization.backfilled``,
  ``organizationMembership.backfilled``, ``organizationInvitation.backfilled``. The type is the
  mark: the projector takes it like any other snapshot of that entity (§6: the greatest
  ``updated_at`` wins, so a webhook with a newer one wins, and on a tie a webhook's
  ``updated`` and ``created`` rank as they always do), and the timeline shows it as
  "User Maya Okafor backfilled". A worker acting on ``user.created`` (a welcome email) is not
  set off by a backfill;
* its ``event_id`` is ``backfill_<object id>_<updated_at>``: the same object at the same
  version always gives the same id, so running backfill again adds nothing (an object changed
  in Clerk since gets a new event, a new version of it);
* no envelope ``timestamp``: the event's time is the object's ``updated_at``.

Each page is appended in one transaction of the log, through :func:`eventstore.log.append_many`
(positions and hash chain as for any event), while the server may keep running. Where it got
to is kept in a file (:func:`state_path`: beside a SQLite log, beside the projections file for a
PostgreSQL log) after each page, so an interrupted backfill resumes there; it is removed when
the backfill is complete. Either log takes the snapshots, through the same append.

HTTP: a 429 waits for its ``Retry-After`` (seconds or a date; else the backoff below) and
tries again; a 5xx or a network error is retried after 0.5, 1, 2, 4 ... s (at most
:data:`MAX_BACKOFF_S`), :data:`MAX_ATTEMPTS` times in all; a 401 or 403 stops at once, with
nothing stored by that request.

Why not the ``clerk-backend-api`` SDK: it returns typed models, not Clerk's JSON, so a snapshot
would hold what the SDK's version models (unknown and newer fields dropped) instead of what
Clerk sent, and webhook and backfill snapshots of one user would differ in shape; and its
retries sleep on their own schedule, ignoring ``Retry-After``. Plain HTTP is a handful of
paths with ``limit``/``offset``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from eventstore.backends import log_transaction, open_log
from eventstore.engine import sqlite3
from eventstore.errors import BackfillFailed
from eventstore.jsondoc import NotAnEvent, load_json
from eventstore.location import LogLocation, PostgresLog
from eventstore.log import append_many, event_record
from eventstore.sql import Sql
from eventstore.timefmt import normalise_ms, now_iso

DEFAULT_API_URL = "https://api.clerk.com"
SECRET_KEY_ENV = "CLERK_SECRET_KEY"
PAGE_SIZE = 500
"""The Backend API's largest page."""
MAX_ATTEMPTS = 8
"""Tries of one request that fails with a 5xx or a network error."""
MAX_RATE_LIMITED = 30
"""Tries of one request that keeps getting 429."""
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 300.0
BACKFILLED = "backfilled"
"""The action of a backfilled snapshot's type (``user.backfilled``)."""
EVENT_ID_PREFIX = "backfill_"


@dataclass(frozen=True, slots=True)
class Resource:
    object_type: str
    """The event type's resource (``organizationMembership``)."""
    label: str
    table: str
    """Its projection table (for ``--dry-run``)."""


USERS = Resource("user", "users", "users")
ORGANIZATIONS = Resource("organization", "organizations", "organizations")
MEMBERSHIPS = Resource("organizationMembership", "memberships", "organization_memberships")
INVITATIONS = Resource("organizationInvitation", "invitations", "organization_invitations")
RESOURCES = (USERS, ORGANIZATIONS, MEMBERSHIPS, INVITATIONS)


# The Backend API --------------------------------------------------------------------------------


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait for a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER_S)


def backoff_s(failures: int) -> float:
    """0.5, 1, 2, 4 ... seconds, at most :data:`MAX_BACKOFF_S`."""
    return float(min(MAX_BACKOFF_S, 0.5 * 2 ** (failures - 1)))


class ClerkAPI:
    """GETs from Clerk's Backend API with the secret key, retried as the module says."""

    def __init__(
        self,
        secret_key: str,
        api_url: str = DEFAULT_API_URL,
        *,
        sleep: Callable[[float], None] = time.sleep,
        say: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._sleep = sleep
        self._say = say
        self._client = httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {secret_key}", "User-Agent": "clerk-audit"},
            timeout=httpx.Timeout(30.0, connect=10.0),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, params: dict[str, Any]) -> Any:
        """The JSON answer to ``GET path?params`` (integers past 64 bits kept exact).

        :raises BackfillFailed: refused (401, 403, another 4xx), or still failing after the
            retries.
        """
        failures = rate_limited = 0
        while True:
            try:
                response = self._client.get(path, params=params)
            except httpx.TransportError as error:
                problem = f"cannot reach {self.api_url}: {error}"
                wait = None
            else:
                if response.status_code == 200:
                    return self._json(path, response)
                problem = f"GET {path} answered HTTP {response.status_code}"
                if response.status_code in (401, 403):
                    raise BackfillFailed(
                        f"Clerk refused the secret key ({problem}): check {SECRET_KEY_ENV} "
                        "(sk_live_... or sk_test_... of this instance); nothing was stored "
                        "by this request"
                    )
                if response.status_code == 429:
                    rate_limited += 1
                    if rate_limited >= MAX_RATE_LIMITED:
                        raise BackfillFailed(f"{problem} (rate limited) {rate_limited} times")
                    wait = retry_after_s(response.headers.get("retry-after"), time.time())
                    self._wait(wait if wait is not None else backoff_s(rate_limited), problem)
                    continue
                if response.status_code < 500:
                    raise BackfillFailed(f"{problem}: {response.text[:300]}")
            failures += 1
            if failures >= MAX_ATTEMPTS:
                raise BackfillFailed(f"{problem}; gave up after {failures} tries")
            self._wait(backoff_s(failures), problem)

    def _wait(self, seconds: float, problem: str) -> None:
        if self._say is not None:
            self._say(f"{problem}; trying again in {seconds:g} s")
        self._sleep(seconds)

    @staticmethod
    def _json(path: str, response: httpx.Response) -> Any:
        try:
            return load_json(response.content)
        except NotAnEvent:
            raise BackfillFailed(f"GET {path} answered 200 with a body that is not JSON") from None

    def pages(
        self, path: str, offset: int = 0, *, ordered: bool = True
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """``(offset, objects)`` for each page of a list, from ``offset`` on. Lists that can
        be sorted are read oldest first, so objects created meanwhile land on later pages."""
        while True:
            params: dict[str, Any] = {"limit": PAGE_SIZE, "offset": offset}
            if ordered:
                params["order_by"] = "+created_at"
            answer = self.get(path, params)
            objects = answer.get("data") if isinstance(answer, dict) else answer
            if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
                raise BackfillFailed(f"GET {path} answered 200 with no list of objects")
            yield offset, objects
            if len(objects) < PAGE_SIZE:
                return
            offset += len(objects)


# Snapshots ----------------------------------------------------------------------------------


def _dump(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer past 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def version_ms(obj: dict[str, Any]) -> int:
    """The object's ``updated_at`` (else ``created_at``, else 0) in ms."""
    for key in ("updated_at", "created_at"):
        ms = normalise_ms(obj.get(key))
        if ms is not None:
            return ms
    return 0


def snapshot_id(obj: dict[str, Any]) -> str | None:
    """``backfill_<id>_<updated_at ms>``; None for an object without a string ``id``."""
    object_id = obj.get("id")
    if not isinstance(object_id, str) or not object_id:
        return None
    return f"{EVENT_ID_PREFIX}{object_id}_{version_ms(obj)}"


def snapshot_body(resource: Resource, obj: dict[str, Any]) -> bytes:
    return _dump({"data": obj, "object": "event", "type": f"{resource.object_type}.{BACKFILLED}"})


@dataclass(slots=True)
class Counts:
    read: int = 0
    new: int = 0


@dataclass(slots=True)
class BackfillResult:
    counts: dict[str, Counts] = field(
        default_factory=lambda: {r.label: Counts() for r in RESOURCES}
    )
    resumed: bool = False


@dataclass(slots=True)
class State:
    """Where an unfinished backfill got to (saved in :func:`state_path`)."""

    api_url: str
    users_offset: int | None = 0
    """None once every user is in."""
    organizations_offset: int = 0
    organizations_done: int = 0
    """Organizations of the page at ``organizations_offset`` whose members and invitations
    are in."""


def state_path(location: LogLocation, projections: Path) -> Path:
    """Where an unfinished backfill of the log at ``location`` is saved: ``<log>.backfill.json``
    beside a SQLite log, ``<projections file>.backfill.json`` for a PostgreSQL log (this
    machine's files; the log's database holds only events)."""
    beside = projections if isinstance(location, PostgresLog) else location
    return beside.with_name(beside.name + ".backfill.json")


def _load_state(path: Path, api_url: str) -> State | None:
    try:
        saved = json.loads(path.read_text())
        state = State(**saved)
    except (OSError, ValueError, TypeError):
        return None
    return state if state.api_url == api_url else None


def _save_state(path: Path, state: State) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(asdict(state)))
    os.replace(partial, path)


class Backfill:
    def __init__(
        self,
        location: LogLocation,
        saved: Path,
        api: ClerkAPI,
        progress: Callable[[BackfillResult], None] | None = None,
    ) -> None:
        """:param saved: where the unfinished backfill is kept (:func:`state_path`)."""
        self._location = location
        self._api = api
        self._progress = progress
        self._state_path = saved
        self.result = BackfillResult()

    def run(self) -> BackfillResult:
        state = _load_state(self._state_path, self._api.api_url)
        self.result.resumed = state is not None
        state = state or State(self._api.api_url)
        conn = open_log(self._location)
        try:
            self._users(conn, state)
            self._organizations(conn, state)
        finally:
            conn.close()
        with contextlib.suppress(FileNotFoundError):
            self._state_path.unlink()
        return self.result

    def _users(self, conn: Sql, state: State) -> None:
        if state.users_offset is None:
            return
        for offset, users in self._api.pages("/v1/users", state.users_offset):
            self._append(conn, USERS, users)
            state.users_offset = offset + len(users)
            _save_state(self._state_path, state)
        state.users_offset = None
        _save_state(self._state_path, state)

    def _organizations(self, conn: Sql, state: State) -> None:
        for offset, organizations in self._api.pages(
            "/v1/organizations", state.organizations_offset
        ):
            self._append(conn, ORGANIZATIONS, organizations)
            for organization in organizations[state.organizations_done :]:
                org_id = organization.get("id")
                if isinstance(org_id, str) and org_id:
                    self._members(conn, org_id)
                state.organizations_done += 1
                _save_state(self._state_path, state)
            state.organizations_offset = offset + len(organizations)
            state.organizations_done = 0
            _save_state(self._state_path, state)

    def _members(self, conn: Sql, org_id: str) -> None:
        base = f"/v1/organizations/{org_id}"
        for _, memberships in self._api.pages(f"{base}/memberships"):
            self._append(conn, MEMBERSHIPS, memberships)
        for _, invitations in self._api.pages(f"{base}/invitations", ordered=False):
            self._append(conn, INVITATIONS, invitations)

    def _append(self, conn: Sql, resource: Resource, objects: list[Any]) -> None:
        received, seconds = now_iso(), int(time.time())
        records = [
            event_record(
                event_id=event_id,
                svix_timestamp=seconds,
                received_at=received,
                body=snapshot_body(resource, obj),
            )
            for obj in objects
            if (event_id := snapshot_id(obj)) is not None
        ]
        counts = self.result.counts[resource.label]
        counts.read += len(objects)
        if records:
            with log_transaction(conn, self._location):
                results = append_many(conn, records)
            # a conflict: this version is stored with another body (an embedded object
            # changed without the object's updated_at): the first snapshot is kept
            counts.new += sum(1 for r in results if isinstance(r, tuple) and r[0] == "stored")
        if self._progress is not None:
            self._progress(self.result)


# --dry-run ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Gaps:
    in_clerk: int = 0
    missing: list[str] = field(default_factory=list)
    """Ids Clerk has and the projections lack."""
    newer: list[str] = field(default_factory=list)
    """Ids whose ``updated_at`` in Clerk is later than in the projections."""


def _iso_to_ms(text: object) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return None


class GapReport:
    """What a backfill would add, against the projections (nothing is written)."""

    def __init__(self, projections: Path, api: ClerkAPI) -> None:
        self._projections = projections
        self._api = api
        self.gaps: dict[str, Gaps] = {r.label: Gaps() for r in RESOURCES}

    def run(self) -> dict[str, Gaps]:
        conn = self._open()
        try:
            for _, users in self._api.pages("/v1/users"):
                self._compare(conn, USERS, users)
            for _, organizations in self._api.pages("/v1/organizations"):
                self._compare(conn, ORGANIZATIONS, organizations)
                for organization in organizations:
                    org_id = organization.get("id")
                    if not isinstance(org_id, str) or not org_id:
                        continue
                    for _, page in self._api.pages(f"/v1/organizations/{org_id}/memberships"):
                        self._compare(conn, MEMBERSHIPS, page)
                    path = f"/v1/organizations/{org_id}/invitations"
                    for _, page in self._api.pages(path, ordered=False):
                        self._compare(conn, INVITATIONS, page)
        finally:
            if conn is not None:
                conn.close()
        return self.gaps

    def _open(self) -> sqlite3.Connection | None:
        if not self._projections.exists():
            return None
        uri = f"{self._projections.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None)

    def _projected(
        self, conn: sqlite3.Connection | None, resource: Resource, ids: list[str]
    ) -> dict[str, int | None]:
        if conn is None or not ids:
            return {}
        try:
            rows = conn.execute(
                f"SELECT id, updated_at FROM {resource.table} "
                f"WHERE id IN ({', '.join('?' * len(ids))})",
                ids,
            ).fetchall()
        except sqlite3.OperationalError:  # no such table yet
            return {}
        return {row[0]: _iso_to_ms(row[1]) for row in rows}

    def _compare(
        self, conn: sqlite3.Connection | None, resource: Resource, objects: list[Any]
    ) -> None:
        gaps = self.gaps[resource.label]
        gaps.in_clerk += len(objects)
        ids = [o["id"] for o in objects if isinstance(o.get("id"), str)]
        projected = self._projected(conn, resource, ids)
        for obj in objects:
            object_id = obj.get("id")
            if not isinstance(object_id, str):
                continue
            if object_id not in projected:
                gaps.missing.append(object_id)
                continue
            ours = projected[object_id]
            if ours is None or version_ms(obj) > ours:
                gaps.newer.append(object_id)
