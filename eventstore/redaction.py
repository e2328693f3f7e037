"""Erasing one Clerk user's personal data from the log (CONTRACT §8, ``clerk-audit redact``).

A redaction replaces the bodies of some events by a **redacted form** and appends one record
of it, in one transaction of the log:

1. a ``clerk-audit.redaction`` event (who, when, why, which positions; no personal data),
   appended and chained like any other: ingest quarantines every body whose ``type`` starts
   with ``clerk-audit.`` (:data:`RESERVED_PREFIX`), so only the store writes these;
2. one ``redactions`` row per redacted position, naming that event and holding the redacted
   body (the UPDATE trigger accepts exactly that body, once);
3. ``UPDATE events SET body = <redacted>`` for those positions, and the ``remote_addr`` and
   ``user_agent`` of their ``deliveries`` replaced by ``[redacted]``.

The append-only triggers (``eventstore.schema``, m006) let exactly this through: an UPDATE of
``events`` that changes nothing but ``body``, to the body ``redactions`` records for that
position and for the redaction event that is the log's last event, i.e. in the transaction
that appended it. ``body_sha256`` keeps the original's
digest, so the chain still verifies (``eventstore.chain``); ``verify`` accepts a body that
differs from its digest only at a position listed by such an event, and only if it is the
body that event recorded (:func:`redacted_positions`).

The redacted form
-----------------
Same JSON shape; ``type``, ``object``, ``timestamp``, ``instance_id``, every number, boolean
and every id (a key ``id`` or ``..._id``) are kept, so each event keeps its columns, its
claim's version key and its place in the ordering rule. What is replaced, in an event *about*
the user (``whole``: their user events, sessions, memberships, invitations, emails, SMS,
billing objects, waitlist entries):

* every non-empty string under a key of :data:`PERSONAL_KEYS`, anywhere in the body, by
  :data:`PLACEHOLDER`: names, usernames, email addresses, phone numbers, image URLs, web3
  wallets, external accounts' provider ids, IP addresses, user agents and the device and place
  of a session's ``latest_activity``, a card's last four digits, an email's subject and bodies,
  an SMS's message, one-time codes;
* every object under a key of :data:`METADATA_KEYS` (``public_metadata``, ``private_metadata``,
  ``unsafe_metadata``) by ``{}``;
* the ``name`` of each passkey, and every string of an email's or SMS's template ``data``
  (the one-time code, who requested it, the user's metadata);
* any string equal to one of the user's email addresses, phone numbers, web3 wallets or IP
  addresses, and any string containing one of them (the value replaced inside it).

In an event that only *mentions* the user (an invitation they sent, an organization they
created), only what describes them: the objects whose ``user_id`` (or ``id``) is theirs get the
rules above, an ``http_request`` from one of their IP addresses loses its IP and user agent,
and their addresses anywhere are replaced as above; the rest (the invitee's address, the
organization's name) stays.

The form is a function of the body and the user's :class:`Subject` alone: the same body always
redacts the same way, and redacting a redacted body again changes nothing.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eventstore.engine import sqlite3
from eventstore.jsondoc import dump_json, load_json
from eventstore.log import RESERVED_PREFIX, append_many
from eventstore.records import EventRecord
from eventstore.sql import Sql
from eventstore.timefmt import iso_ms

REDACTION_TYPE = f"{RESERVED_PREFIX}redaction"
PLACEHOLDER = "[redacted]"

PERSONAL_KEYS = frozenset({
    # who they are
    "first_name", "last_name", "username", "identifier", "image_url", "profile_image_url",
    "avatar_url", "provider_user_id", "web3_wallet", "label",
    # how to reach them
    "email_address", "email", "to_email_address", "phone_number", "to_phone_number",
    # where and on what they were
    "client_ip", "user_agent", "ip_address", "city", "country", "device_type", "browser_name",
    "browser_version",
    # what was sent to them, and how they pay
    "subject", "body", "body_plain", "message", "otp_code", "requested_by", "last4",
})  # fmt: skip
"""Keys whose string values are personal, wherever they appear in a body about the user."""
METADATA_KEYS = frozenset({"public_metadata", "private_metadata", "unsafe_metadata"})
"""Free-form objects the application fills: replaced by ``{}``."""
_BY_PARENT = {"passkeys": frozenset({"name"})}
"""Keys personal only inside the object (or list of objects) under a given key."""
_MESSAGES = frozenset({"email", "sms"})
"""Object types whose ``data.data`` (the template's variables) is redacted whole."""
_KEPT = frozenset({"id", "type", "object"})
_MIN_INSIDE = 6
"""Shortest value replaced inside a longer string (shorter ones only when equal)."""

_PER_STATEMENT = 500
"""Positions per ``IN (...)`` list (SQLite's variable limit is far above)."""


@dataclass(frozen=True, slots=True)
class Subject:
    """The user whose data is erased, and the values that identify them anywhere."""

    user_id: str
    values: frozenset[str] = frozenset()
    """Their email addresses, phone numbers and web3 wallets, from every snapshot of them."""
    ips: frozenset[str] = frozenset()
    """The IP addresses of their own requests (user and session events)."""

    @property
    def emails(self) -> list[str]:
        return sorted(v for v in self.values if "@" in v)

    @property
    def phones(self) -> list[str]:
        return sorted(v for v in self.values if "@" not in v)

    def scrub(self, value: str) -> str:
        """``value`` with each of the user's values in it replaced."""
        if value in self.values or value in self.ips:
            return PLACEHOLDER
        for known in _longest_first(self.values | self.ips):
            if len(known) >= _MIN_INSIDE and known in value:
                value = value.replace(known, PLACEHOLDER)
        return value


def _longest_first(values: Iterable[str]) -> list[str]:
    return sorted(values, key=lambda v: (-len(v), v))


def _usable(value: object) -> str | None:
    return value if isinstance(value, str) and value and PLACEHOLDER not in value else None


def subject_values(user_id: str, documents: Iterable[Any]) -> Subject:
    """The :class:`Subject` of ``user_id`` from the parsed bodies of their user and session
    events (already redacted values are ignored)."""
    values: set[str] = set()
    ips: set[str] = set()
    for doc in documents:
        if not isinstance(doc, dict):
            continue
        data = doc.get("data")
        data = data if isinstance(data, dict) else {}
        user = data if data.get("id") == user_id else data.get("user")
        if isinstance(user, dict) and user.get("id") == user_id:
            for list_key, key in (
                ("email_addresses", "email_address"), ("phone_numbers", "phone_number"),
                ("web3_wallets", "web3_wallet"), ("external_accounts", "email_address"),
            ):  # fmt: skip
                items = user.get(list_key)
                for item in items if isinstance(items, list) else ():
                    if isinstance(item, dict) and (found := _usable(item.get(key))):
                        values.add(found)
        request = doc.get("event_attributes")
        request = request.get("http_request") if isinstance(request, dict) else None
        if isinstance(request, dict) and (ip := _usable(request.get("client_ip"))):
            ips.add(ip)
        activity = data.get("latest_activity")
        if isinstance(activity, dict) and (ip := _usable(activity.get("ip_address"))):
            ips.add(ip)
    return Subject(user_id, frozenset(values), frozenset(ips))


class _Redactor:
    """One body's walk (a rebuild-sized redaction walks a thousand: kept tight)."""

    def __init__(self, subject: Subject) -> None:
        self.user_id = subject.user_id
        self.ips = subject.ips
        self.exact = subject.values | subject.ips
        self.inside = [v for v in _longest_first(self.exact) if len(v) >= _MIN_INSIDE]

    def scrub(self, value: str) -> str:
        if value in self.exact:
            return PLACEHOLDER
        for known in self.inside:
            if known in value:
                value = value.replace(known, PLACEHOLDER)
        return value

    def text(self, value: str, key: str, personal: bool, extra: frozenset[str] | None) -> str:
        if not value or key in _KEPT or key.endswith("_id"):
            return value
        if personal and (key in PERSONAL_KEYS or (extra is not None and key in extra)):
            return PLACEHOLDER
        return self.scrub(value) if self.exact else value

    def items(
        self, values: list[Any], key: str, personal: bool, extra: frozenset[str] | None
    ) -> list[Any]:
        out: list[Any] = []
        for item in values:
            kind = type(item)
            if kind is str:
                out.append(self.text(item, key, personal, extra))
            elif kind is dict:
                out.append(self.obj(item, key, personal))
            elif kind is list:
                out.append(self.items(item, key, personal, extra))
            else:
                out.append(item)
        return out

    def obj(self, doc: dict[str, Any], key: str, personal: bool) -> dict[str, Any]:
        """``doc``, found under ``key``; ``personal``: inside something about the user."""
        if not personal:
            personal = doc.get("user_id") == self.user_id or doc.get("id") == self.user_id
        extra = _BY_PARENT.get(key)
        out: dict[str, Any] = {}
        for name, item in doc.items():
            kind = type(item)
            if kind is str:
                out[name] = self.text(item, name, personal, extra)
            elif kind is dict:
                metadata = personal and name in METADATA_KEYS
                out[name] = {} if metadata else self.obj(item, name, personal)
            elif kind is list:
                out[name] = self.items(item, name, personal, extra)
            else:
                out[name] = item
        ip = doc.get("client_ip")
        if key == "http_request" and not personal and type(ip) is str and ip in self.ips:
            for name in ("client_ip", "user_agent"):
                if _usable(out.get(name)):
                    out[name] = PLACEHOLDER
        return out

    def every_string(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if k in _KEPT else self.every_string(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.every_string(item) for item in value]
        return PLACEHOLDER if isinstance(value, str) and value else value


def redact_document(doc: dict[str, Any], subject: Subject, *, whole: bool) -> dict[str, Any]:
    """The redacted form of a parsed body (see the module's doc); ``whole``: the event is
    about the user, else it only mentions them."""
    redactor = _Redactor(subject)
    out = redactor.obj(doc, "", whole)
    data = out.get("data")
    event_type = doc.get("type")
    resource = event_type.partition(".")[0] if isinstance(event_type, str) else None
    if whole and resource in _MESSAGES and isinstance(data, dict) and "data" in data:
        data["data"] = redactor.every_string(data["data"])
    return out


def redact_body(body: bytes, subject: Subject, *, whole: bool) -> bytes:
    """The redacted form of a stored body; the body itself when there is nothing to redact
    (already redacted, or not a JSON object)."""
    try:
        doc = load_json(body)
    except ValueError:
        return body
    if not isinstance(doc, dict):
        return body
    redacted = redact_document(doc, subject, whole=whole)
    return body if redacted == doc else dump_json(redacted).encode()


# -- the log transaction ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Redaction:
    """What one redaction did."""

    event_id: str | None
    """The ``clerk-audit.redaction`` event appended (None: nothing to redact)."""
    position: int | None
    positions: tuple[int, ...]
    deliveries: int
    """``deliveries`` rows whose address and user agent were erased."""


def default_actor() -> str:
    """The OS user running the command."""
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return str(os.getuid())


def in_chunks(values: Sequence[Any], size: int = _PER_STATEMENT) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def read_bodies(conn: Sql, positions: Iterable[int]) -> list[tuple[int, str, bytes, str]]:
    """``(position, event_id, body, status)`` of ``positions``, in position order."""
    wanted = sorted(set(positions))
    rows: list[tuple[int, str, bytes, str]] = []
    for part in in_chunks(wanted):
        rows += conn.execute(
            "SELECT position, event_id, body, status FROM events "
            f"WHERE position IN ({', '.join('?' * len(part))})",
            part,
        ).fetchall()
    return sorted(rows)


def redaction_record(
    *, actor: str, reason: str, bodies: Sequence[tuple[int, bytes]], now_ms: int | None = None
) -> EventRecord:
    """The ``clerk-audit.redaction`` event that records a redaction: who, when, why, the
    positions and the SHA-256 of each one's redacted body (``bodies``: ``(position,
    redacted body)``), which ``verify`` checks."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    event_id = f"redaction_{uuid.uuid4().hex}"
    document = {
        "object": "event",
        "type": REDACTION_TYPE,
        "timestamp": now_ms,
        "data": {
            "id": event_id,
            "object": "redaction",
            "actor": actor,
            "reason": reason,
            "redacted_at": iso_ms(now_ms),
            "positions": [position for position, _ in bodies],
            "body_sha256": [hashlib.sha256(body).hexdigest() for _, body in bodies],
        },
    }
    from eventstore.envelope import parse_envelope  # pydantic: verify's workers start without it

    body = dump_json(document).encode()
    envelope = parse_envelope(body)
    return EventRecord(
        event_id=event_id,
        event_type=envelope.type,
        object_type=envelope.object_type,
        object_id=envelope.object_id,
        instance_id=None,
        occurred_at=envelope.occurred_at,
        received_at=iso_ms(now_ms),
        svix_timestamp=now_ms // 1000,
        body=body,
        body_sha256=hashlib.sha256(body).hexdigest(),
        status="ok",
        quarantine_reason=None,
    )


def redact_positions(
    conn: Sql,
    subject: Subject,
    about: Iterable[int],
    mentions: Iterable[int],
    *,
    actor: str,
    reason: str,
) -> Redaction:
    """Redact the events at ``about`` (whole) and ``mentions`` (what describes the user), in
    the caller's ``BEGIN IMMEDIATE`` transaction on a connection with ``secure_delete`` on.
    Positions whose body is already in its redacted form are left alone; when none is left,
    nothing is written."""
    changed = _redacted_bodies(conn, subject, set(about), set(mentions))
    if not changed:
        return Redaction(None, None, (), 0)
    record = redaction_record(
        actor=actor, reason=subject.scrub(reason), bodies=[(p, b) for p, _, b in changed]
    )
    (appended,) = append_many(conn, [record])
    if isinstance(appended, Exception):  # a fresh uuid4 cannot be stored already
        raise appended
    conn.executemany(
        "INSERT INTO redactions (position, redaction_event_id, body) VALUES (?, ?, ?)",
        [(p, record.event_id, b) for p, _, b in changed],
    )
    conn.executemany(
        "UPDATE events SET body = ? WHERE position = ?", [(b, p) for p, _, b in changed]
    )
    erased = _erase_request_details(conn, [event_id for _, event_id, _ in changed])
    positions = tuple(position for position, _, _ in changed)
    return Redaction(record.event_id, appended[1], positions, erased)


def _redacted_bodies(
    conn: Sql, subject: Subject, whole: set[int], mentions: set[int]
) -> list[tuple[int, str, bytes]]:
    """``(position, event_id, redacted body)`` of the stored events at ``whole`` (redacted
    whole) and ``mentions`` whose redacted body differs from the stored one."""
    changed: list[tuple[int, str, bytes]] = []
    for position, event_id, body, status in read_bodies(conn, whole | mentions):
        if status != "ok":
            continue
        redacted = redact_body(body, subject, whole=position in whole)
        if redacted != body:
            changed.append((position, event_id, redacted))
    return changed


def _erase_request_details(conn: Sql, event_ids: list[str]) -> int:
    """Replace the client address and user agent of every delivery of ``event_ids`` with the
    placeholder; returns how many deliveries changed."""
    erased = 0
    for part in in_chunks(event_ids):
        erased += conn.execute(
            "UPDATE deliveries SET "
            f"remote_addr = CASE WHEN remote_addr IS NULL THEN NULL ELSE '{PLACEHOLDER}' END, "
            f"user_agent = CASE WHEN user_agent IS NULL THEN NULL ELSE '{PLACEHOLDER}' END "
            f"WHERE event_id IN ({', '.join('?' * len(part))}) "
            f"AND (remote_addr IS NOT NULL AND remote_addr != '{PLACEHOLDER}' "
            f"OR user_agent IS NOT NULL AND user_agent != '{PLACEHOLDER}')",
            part,
        ).rowcount
    return erased


def truncate_wal(conn: sqlite3.Connection, attempts: int = 3, pause_s: float = 0.1) -> bool:
    """Checkpoint the whole WAL into the file and truncate it to zero bytes, so the pages a
    redaction replaced are gone from both. SQLite waits (the connection's busy timeout) for
    readers of older snapshots; it is tried ``attempts`` times. Returns whether it
    completed."""
    for attempt in range(attempts):
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:
            busy = 1
        if not busy:
            return True
        if attempt + 1 < attempts:
            time.sleep(pause_s)
    return False


# -- what verify accepts ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Redacted:
    """The positions whose bodies recorded redactions replaced."""

    positions: frozenset[int]
    redactions: int
    """How many ``clerk-audit.redaction`` events account for them."""


def redacted_positions(conn: Sql) -> Redacted:
    """The positions ``verify`` lets differ from their ``body_sha256``.

    Each is in ``redactions``, listed in the body of the ``clerk-audit.redaction`` event that
    row names (a status-ok event at a later position, whose own body matches its digest; the
    chain over every event is checked by ``verify`` itself), and its body is the one the last
    such event recorded (its ``body_sha256`` list), so a redacted body is tamper-evident too. A
    ``redactions`` row alone proves nothing. Reads the redaction events through the
    ``events_redactions`` index and the redacted bodies by position.
    """
    records: dict[str, tuple[int, dict[int, str]]] = {}
    for position, event_id, body, digest in conn.execute(
        "SELECT position, event_id, body, body_sha256 FROM events "  # the partial index's term
        f"WHERE event_type = '{REDACTION_TYPE}' AND status = 'ok'"
    ):
        listed = _listed(event_id, body, digest)
        if listed is not None:
            records[event_id] = (int(position), listed)
    try:
        rows = conn.execute("SELECT position, redaction_event_id FROM redactions").fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return Redacted(frozenset(), 0)
        raise
    own = {position for position, _ in records.values()}
    latest: dict[int, tuple[int, str]] = {}
    backers: dict[int, set[str]] = {}
    for position, event_id in rows:
        record = records.get(event_id)
        if not record or position >= record[0] or position in own or position not in record[1]:
            continue
        backers.setdefault(position, set()).add(event_id)
        if position not in latest or record[0] > latest[position][0]:
            latest[position] = (record[0], record[1][position])
    found = {
        position
        for position, _, body, _ in read_bodies(conn, latest)
        if hashlib.sha256(body).hexdigest() == latest[position][1]
    }
    used = {event_id for position in found for event_id in backers[position]}
    return Redacted(frozenset(found), len(used))


def _listed(event_id: str, body: bytes, digest: str) -> dict[int, str] | None:
    """``{position: redacted body's sha256}`` of a redaction event (None if it is not one)."""
    if hashlib.sha256(body).hexdigest() != digest:
        return None
    try:
        doc = load_json(body)
    except ValueError:
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or data.get("id") != event_id:
        return None
    positions, digests = data.get("positions"), data.get("body_sha256")
    if not isinstance(positions, list) or not isinstance(digests, list):
        return None
    if len(positions) != len(digests):
        return None
    return {p: d for p, d in zip(positions, digests, strict=True)
            if type(p) is int and isinstance(d, str)}  # fmt: skip
