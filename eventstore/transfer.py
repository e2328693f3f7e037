"""``clerk-audit export`` and ``import``: the log as NDJSON and back (CONTRACT §9).

The file
--------
One event per line, written by :func:`eventstore.feed.event_json`: every ``events`` column by
name (``position`` ... ``chain``), then the body, byte-exact: ``"body": <its own bytes>`` last
for a stored event on one line (every Clerk delivery); for a stored event over several lines,
``"body"`` on one line followed by ``"body_text"``, the exact text; ``"body_text"`` alone for
another UTF-8 body, ``"body_base64"`` for one that is not UTF-8. Gzip when the file name ends
in ``.gz`` (with no name or time in the gzip header, so the same log always gives the same
bytes).

Import
------
:func:`import_file` reads such a file (gzip or not, whatever its name) and appends each event
whose ``event_id`` the store does not hold yet, through :func:`eventstore.log.append_many`, so
positions and the hash chain are the target's own: into an empty store they come out as in
the file, and exporting it again gives the same file. ``received_at``, ``svix_timestamp`` and
the other columns are kept as exported (they describe the original delivery). An event already
stored with the same body is skipped (import is idempotent); with another body, the line is
refused. Each appended event gets an ``imported_events`` row (its position, the run's
``imports`` row, its position in the file's log): that is how imported rows are marked, while
``events`` stays exactly as exported.

A line is refused, with its number, when it is not a JSON object (a truncated last line
included), lacks a column or has one of the wrong type, has no body or a body whose SHA-256 is
not its ``body_sha256``, or is ``ok`` without being a JSON object with a string ``type``.

One transaction per batch, not per file: every line before the first refused one is imported,
nothing from it on (a batch is checked whole before it is written, and written in one
transaction). A whole file in one transaction would hold the log's only write lock for as long
as the import runs (a million events: tens of seconds), and the server's deliveries would get
503s meanwhile; batches let them in between. After a refusal, fix the file and run it again:
what was imported is skipped.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import orjson

from eventstore.backends import log_transaction, open_log
from eventstore.envelope import NotAnEvent, parse_document
from eventstore.errors import ImportRefused
from eventstore.feed import event_json, iter_events
from eventstore.location import LogLocation, open_log_reader
from eventstore.log import append_many, sha256_hex
from eventstore.records import EventRecord
from eventstore.sql import Sql
from eventstore.timefmt import now_iso

GZIP_LEVEL = 6
IMPORT_BATCH = 5000
EXPORT_BATCH = 5000
GZIP_MAGIC = b"\x1f\x8b"

# Export ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportResult:
    events: int
    first: int | None
    last: int | None


@contextlib.contextmanager
def _output(out: Path | None) -> Iterator[BinaryIO]:
    """The file to write (``FILE.partial``, renamed to ``FILE`` once complete), or stdout."""
    if out is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    partial = out.with_name(out.name + ".partial")
    try:
        with open(partial, "wb") as raw:
            if out.name.endswith(".gz"):
                with gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0
                ) as zipped:
                    yield zipped  # type: ignore[misc]
            else:
                yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def export_log(
    db_path: LogLocation,
    out: Path | None,
    after: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write every event after position ``after`` to ``out`` (None: stdout), one per line,
    up to the log's head when the export reaches it. Pages are read one by one (the log only
    grows, so no long read transaction holds back the server's checkpoints)."""
    count, first, last = 0, None, None
    conn = open_log_reader(db_path)
    try:
        with _output(out) as sink:
            for page in iter_events(conn, after, batch=EXPORT_BATCH):
                sink.write(b"".join(event_json(row) + b"\n" for row in page.rows))
                count += len(page.rows)
                first = first or page.rows[0][0]
                last = page.rows[-1][0]
                if progress is not None:
                    progress(count)
    finally:
        conn.close()
    return ExportResult(count, first, last)


# Import ---------------------------------------------------------------------------------------

_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_SCALAR = rb"(?:" + _STRING + rb"|-?[0-9][0-9.eE+-]*|null|true|false)"
_BEFORE_BODY = re.compile(rb"\{(?:" + _STRING + rb":" + _SCALAR + rb",)*\"body\":", re.DOTALL)
"""The members before ``"body":`` when they are all scalars, as :func:`event_json` writes."""
_HEX64 = re.compile(r"[0-9a-f]{64}")

_TEXT_COLUMNS = ("event_type", "object_type", "object_id", "instance_id", "occurred_at",
                 "quarantine_reason")  # fmt: skip


class BadLine(ValueError):
    """Why one line cannot be imported (the caller adds its number)."""


def _parse_line(line: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:  # nested past orjson's 1,024 levels (a body at the limit, inside the line)
            value = json.loads(line)
        except (ValueError, RecursionError):
            if line.lstrip().startswith(b"{") and not line.rstrip().endswith(b"}"):
                raise BadLine("not a whole JSON object (the line is cut short)") from None
            raise BadLine("not JSON") from None
    if not isinstance(value, dict):
        raise BadLine(f"a JSON {type(value).__name__}, not an object")
    return value


def _raw_body(line: bytes, fields: dict[str, Any]) -> bytes:
    """The body's exact bytes, as they stand in ``line``."""
    if "body_text" in fields:
        text = fields["body_text"]
        if not isinstance(text, str):
            raise BadLine("body_text must be a string")
        return text.encode()
    if "body_base64" in fields:
        try:
            return base64.b64decode(fields["body_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise BadLine("body_base64 is not base64") from None
    if "body" not in fields:
        raise BadLine("no body (body, body_text or body_base64)")
    end = line.rstrip()
    start = line.find(b',"body":') + 8
    if start == 7 or b"{" in line[1:start] or b"[" in line[1:start]:  # not as we write it
        match = _BEFORE_BODY.match(line)
        start = match.end() if match is not None else 0
    if not start or next(reversed(fields)) != "body" or not end.endswith(b"}"):
        raise BadLine("the body is not the line's last member, so its exact bytes are unknown; "
                      "use body_text for a body of another shape")  # fmt: skip
    return end[start:-1]


def _text(fields: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = fields.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadLine(f"{name} must be a non-empty string")
    return value


def _integer(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if type(value) is not int:
        raise BadLine(f"{name} must be an integer")
    return value


@dataclass(frozen=True, slots=True)
class Line:
    record: EventRecord
    source_position: int


def _texts(fields: dict[str, Any]) -> list[str | None]:
    """The values of :data:`_TEXT_COLUMNS`: each a non-empty string or null."""
    values = [fields.get(name) for name in _TEXT_COLUMNS]
    for name, value in zip(_TEXT_COLUMNS, values, strict=True):
        if value is not None and (type(value) is not str or not value):
            raise BadLine(f"{name} must be a non-empty string or null")
    return values


def read_line(line: bytes) -> Line:
    """The event on one line of an export, checked.

    :raises BadLine: why it cannot be imported.
    """
    fields = _parse_line(line)
    body = _raw_body(line, fields)
    digest = fields.get("body_sha256")
    if type(digest) is not str or _HEX64.fullmatch(digest) is None:
        raise BadLine("body_sha256 must be 64 lowercase hex digits")
    if sha256_hex(body) != digest:
        raise BadLine("the body does not match its body_sha256")
    event_type, object_type, object_id, instance_id, occurred_at, reason = _texts(fields)
    status = fields.get("status")
    if status == "ok":
        if reason is not None or event_type is None:
            raise BadLine("an ok event needs an event_type and no quarantine_reason")
        exact = "body_text" not in fields and "body_base64" not in fields
        parsed = fields.get("body") if exact else None  # else: body is a copy, if any
        if not (type(parsed) is dict and type(parsed.get("type")) is str):
            try:
                parse_document(body)
            except NotAnEvent as error:
                raise BadLine(f"status is ok but the body is not an event: {error}") from None
    elif status == "quarantined":
        if reason is None:
            raise BadLine("a quarantined event needs its quarantine_reason")
    else:
        raise BadLine("status must be ok or quarantined")
    record = EventRecord(
        _text(fields, "event_id", required=True) or "",
        event_type, object_type, object_id, instance_id, occurred_at,
        _text(fields, "received_at", required=True) or "",
        _integer(fields, "svix_timestamp"),
        body, digest, status, reason,
    )  # fmt: skip
    return Line(record, _integer(fields, "position"))


@dataclass(slots=True)
class ImportResult:
    lines: int = 0
    imported: int = 0
    skipped: int = 0
    first: int | None = None
    last: int | None = None


STDIN = "-"
"""The FILE that means standard input (``clerk-audit export | clerk-audit import -``)."""


def _opened(path: Path) -> io.BufferedReader:
    if str(path) == STDIN:
        return io.BufferedReader(io.FileIO(os.dup(sys.stdin.fileno()), "rb"))
    return open(path, "rb")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(number, line)`` for each non-empty line, gunzipped if it is gzip (whatever its
    name); a corrupt gzip stream is refused."""
    number = 0
    with _opened(path) as raw:
        zipped = raw.peek(2)[:2] == GZIP_MAGIC
        source: IO[bytes] = (
            gzip.GzipFile(fileobj=raw, mode="rb") if zipped else raw  # type: ignore[assignment]
        )
        try:
            for number, line in enumerate(source, start=1):
                if line.strip():
                    yield number, line
        except (OSError, EOFError) as error:
            raise ImportRefused(f"{path}: cannot read after line {number}: {error}") from None
        finally:
            source.close()


class _Importer:
    def __init__(self, conn: Sql, db_path: LogLocation, source: str) -> None:
        self._conn = conn
        self._db_path = db_path
        self._source = source
        self._import_id: int | None = None
        self.result = ImportResult()

    def write(self, batch: list[tuple[int, Line]]) -> tuple[int, str] | None:
        """Append ``batch`` in one transaction; a conflicting ``event_id`` stops it there:
        what comes before is written, and ``(line number, problem)`` is returned."""
        if not batch:
            return None
        with log_transaction(self._conn, self._db_path):
            self._conn.execute("SAVEPOINT batch")
            results = append_many(self._conn, [line.record for _, line in batch])
            refused = next(
                (i for i, result in enumerate(results) if not isinstance(result, tuple)), None
            )
            problem = None
            if refused is not None:
                problem = (batch[refused][0], str(results[refused]))
                self._conn.execute("ROLLBACK TO batch")
                batch = batch[:refused]
                results = append_many(self._conn, [line.record for _, line in batch])
            self._conn.execute("RELEASE batch")
            self._mark(batch, results)
        return problem

    def _mark(self, batch: list[tuple[int, Line]], results: list[Any]) -> None:
        stored = [
            (position, line.source_position)
            for (_, line), (status, position) in zip(batch, results, strict=True)
            if status == "stored"
        ]
        self.result.lines += len(batch)
        self.result.skipped += len(batch) - len(stored)
        if not stored:
            return
        if self._import_id is None:
            (self._import_id,) = self._conn.execute(
                "INSERT INTO imports (imported_at, source) VALUES (?, ?) RETURNING id",
                (now_iso(), self._source),
            ).fetchone()
        self._conn.executemany(
            "INSERT INTO imported_events (position, import_id, source_position) VALUES (?, ?, ?)",
            [(position, self._import_id, source) for position, source in stored],
        )
        self.result.imported += len(stored)
        self.result.first = self.result.first or stored[0][0]
        self.result.last = stored[-1][0]


def import_file(
    db_path: LogLocation, path: Path, progress: Callable[[ImportResult], None] | None = None
) -> ImportResult:
    """Import the export at ``path`` into the log at ``db_path`` (created if missing).

    :raises ImportRefused: a line cannot be imported: the lines before it are.
    """
    if str(path) != STDIN and not path.is_file():
        raise ImportRefused(f"{path}: no such file")
    conn = open_log(db_path)
    try:
        importer = _Importer(conn, db_path, path.name)
        batch: list[tuple[int, Line]] = []
        for number, line in _lines(path):
            try:
                batch.append((number, read_line(line)))
            except BadLine as problem:
                conflict = importer.write(batch)
                where = conflict or (number, str(problem))
                raise _refused(path, where, importer.result) from None
            if len(batch) >= IMPORT_BATCH:
                conflict = importer.write(batch)
                if conflict is not None:
                    raise _refused(path, conflict, importer.result)
                batch = []
                if progress is not None:
                    progress(importer.result)
        conflict = importer.write(batch)
        if conflict is not None:
            raise _refused(path, conflict, importer.result)
        return importer.result
    finally:
        conn.close()


def _refused(path: Path, where: tuple[int, str], result: ImportResult) -> ImportRefused:
    number, problem = where
    return ImportRefused(
        f"{path}: line {number}: {problem}; nothing from this line on was imported "
        f"({result.imported} events before it were, {result.skipped} already stored)"
    )
