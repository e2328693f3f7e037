"""Reading an export's lines for ``clerk-audit import`` (``eventstore.transfer``): each line
checked and turned into the ``events`` row it describes, or refused with the reason.

What makes a line importable is in :func:`read_line`. The file is read in chunks of whole lines
(:func:`chunks`), and chunks are checked ahead of the writer (:func:`checked_chunks`): on a
thread for a small file, on worker processes for a large one, since checking a line (JSON and
SHA-256 of its body) costs about as much CPU as appending it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gc
import gzip
import io
import itertools
import json
import os
import pickle
import re
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import orjson

from eventstore.errors import ImportRefused
from eventstore.feed import COLUMNS
from eventstore.jsondoc import NotAnEvent, parse_document
from eventstore.log import EventRow, event_row, sha256_hex
from eventstore.records import EventRecord

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


Line = tuple[EventRow, int]
"""One line's event: its ``events`` values (:data:`eventstore.log.EVENT_COLUMNS` order) and its
position in the exported log. A plain tuple: it crosses from a checker process pickled, and a
named tuple pickles and unpickles through Python code, several times slower."""


def _texts(fields: dict[str, Any]) -> list[str | None]:
    """The values of :data:`_TEXT_COLUMNS`: each a non-empty string or null."""
    values = [fields.get(name) for name in _TEXT_COLUMNS]
    for name, value in zip(_TEXT_COLUMNS, values, strict=True):
        if value is not None and (type(value) is not str or not value):
            raise BadLine(f"{name} must be a non-empty string or null")
    return values


_BODY = b',"body":'
_OPTIONAL = (str, type(None))
_ORDINARY_TYPES = frozenset(
    (int, str, str, a, b, c, d, str, int, str, str, type(None))
    for a, b, c, d in itertools.product(_OPTIONAL, repeat=4)
)
"""The types of an ``ok`` line's columns (``position`` ... ``quarantine_reason``; ``chain`` is
the target's own, never read): ``object_type``, ``object_id``, ``instance_id`` and
``occurred_at`` may be null."""


def read_line(line: bytes) -> Line:
    """The event on one line of an export, checked.

    :raises BadLine: why it cannot be imported.
    """
    return _ordinary_line(line) or _checked_line(line)


def _ordinary_line(line: bytes) -> Line | None:
    """The line as export writes nearly every one (an ``ok`` event on one line: its columns,
    then its body, byte-exact), read with two small parses instead of one of the whole line;
    None for any other line, or one that fails any check: :func:`_checked_line` then reads it
    again and says why. So this accepts only lines that that path accepts too."""
    start, end = line.find(_BODY), line.rstrip()
    if start < 0 or line.find(b"{", 1, start) >= 0 or line.find(b"[", 1, start) >= 0:
        return None
    body = end[start + 8 : -1]
    try:
        fields, document = orjson.loads(line[:start] + b"}"), orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not (end.endswith(b"}") and type(fields) is dict and tuple(fields) == COLUMNS
            and type(document) is dict and type(document.get("type")) is str):  # fmt: skip
        return None
    values = tuple(fields.values())
    if tuple(map(type, values[:12])) not in _ORDINARY_TYPES or "" in values:
        return None  # a column of another type, or empty: the checked path says which
    (position, event_id, event_type, object_type, object_id, instance_id, occurred_at,
     received_at, svix_timestamp, digest, status, reason, _) = values  # fmt: skip
    if status != "ok" or sha256_hex(body) != digest:
        return None
    row = (event_id, event_type, object_type, object_id, instance_id, occurred_at, received_at,
           svix_timestamp, body, digest, status, reason)  # fmt: skip
    return row, position


def _checked_line(line: bytes) -> Line:
    """:func:`read_line` for any line, checking each rule in turn to say which one fails."""
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
    return event_row(record), _integer(fields, "position")


Problem = tuple[int, str]
"""A line's number and why it was refused."""
Numbered = tuple[int, EventRow, int]
"""A line's number, its event's ``events`` values and its position in the exported log."""
Checked = tuple[list[Numbered], Problem | None]
"""The events of a run of lines up to the first bad line, and that line's problem if any."""


def check_lines(numbered: Iterable[tuple[int, bytes]]) -> Checked:
    """:func:`read_line` of each of ``numbered`` up to the first bad one."""
    read: list[Numbered] = []
    for number, line in numbered:
        try:
            read.append((number, *read_line(line)))
        except BadLine as problem:
            return read, (number, str(problem))
    return read, None


def check_chunk(first: int, chunk: bytes) -> Checked:
    """:func:`check_lines` of the non-empty lines of ``chunk``, numbered from ``first`` (a
    checker's task: what crosses between processes is the chunk and the rows)."""
    return check_lines(_numbered(first, chunk))


def _numbered(first: int, chunk: bytes) -> Iterator[tuple[int, bytes]]:
    """The non-empty lines of ``chunk`` with their numbers. Found with ``find``, which looks
    for one byte with ``memchr``, where ``split`` and ``count`` (Python 3.11) test every byte:
    on 3 KB lines, 2 us a line against 0.4."""
    start, number = 0, first
    while start < len(chunk):
        end = chunk.find(b"\n", start)
        end = len(chunk) if end < 0 else end
        line = chunk[start:end]
        if line and not line.isspace():
            yield number, line
        start, number = end + 1, number + 1


def _newlines(chunk: bytes) -> int:
    """``chunk.count(b"\n")``, five times faster on long lines (see :func:`_numbered`)."""
    count, end = 0, chunk.find(b"\n")
    while end >= 0:
        count, end = count + 1, chunk.find(b"\n", end + 1)
    return count


STDIN = "-"
"""The FILE that means standard input (``clerk-audit export | clerk-audit import -``)."""
GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK = 4 << 20
PARALLEL_BYTES = 64 << 20
"""A file is checked on worker processes after this much of it (about 22,000 events) has been
read on a thread: starting a worker costs about half a second of CPU (it imports the package)."""
MAX_CHECKERS = 4


def _opened(path: Path) -> io.BufferedReader:
    if str(path) == STDIN:
        return io.BufferedReader(io.FileIO(os.dup(sys.stdin.fileno()), "rb"))
    return open(path, "rb")


def chunks(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(first line number, whole lines)`` of the file, gunzipped if it is gzip (whatever its
    name), about :data:`READ_CHUNK` bytes at a time; a corrupt gzip stream is refused after
    the whole lines read before it."""
    number = 0
    with _opened(path) as raw:
        zipped = raw.peek(2)[:2] == GZIP_MAGIC
        source: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb") if zipped else raw
        rest = b""
        try:  # read1: a stream broken further on still gives what comes before the break
            while data := source.read1(READ_CHUNK):
                data = rest + data
                end = data.rfind(b"\n") + 1
                chunk, rest = data[:end], data[end:]
                if chunk:
                    yield number + 1, chunk
                    number += _newlines(chunk)
            if rest:
                yield number + 1, rest
        except (OSError, EOFError) as error:
            raise ImportRefused(f"{path}: cannot read after line {number}: {error}") from None
        finally:
            source.close()


def _checkers() -> int:
    """Worker processes to check lines on: one core is the writer's."""
    return max(1, min(MAX_CHECKERS, len(os.sched_getaffinity(0)) - 1))


_FRAME = struct.Struct("<QQ")
"""A chunk sent to a checker: its first line's number and its size, then its bytes."""
_SIZE = struct.Struct("<Q")
_SERVE = "from eventstore.import_lines import serve_checks; serve_checks()"


def serve_checks() -> None:
    """A checker process's loop (see :class:`_Checker`), until its standard input closes."""
    gc.disable()  # what it makes holds no cycle, and a collection would walk the whole chunk
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while frame := source.read(_FRAME.size):
        first, size = _FRAME.unpack(frame)
        answer = pickle.dumps(check_chunk(first, source.read(size)), pickle.HIGHEST_PROTOCOL)
        sink.write(_SIZE.pack(len(answer)))
        sink.write(answer)
        sink.flush()


def _exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the checker process stopped")
    return data


class _Checker:
    """A process of its own (:func:`serve_checks`, started as ``python -c``, so that it never
    imports the caller's main module) that checks each chunk written to its standard input and
    answers with the :data:`Checked`, pickled. One chunk at a time, sent and answered on a
    thread of its own: the pipe's two ends then never wait for each other."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        paths = [root, *filter(None, [os.environ.get("PYTHONPATH")])]
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        )  # fmt: skip
        self._lane = ThreadPoolExecutor(1, thread_name_prefix="clerk-audit-checker")

    def submit(self, first: int, chunk: bytes) -> Future[Checked]:
        return self._lane.submit(self._check, first, chunk)

    def _check(self, first: int, chunk: bytes) -> Checked:
        sink, source = self._process.stdin, self._process.stdout
        assert sink is not None and source is not None
        try:
            sink.write(_FRAME.pack(first, len(chunk)))
            sink.write(chunk)
            sink.flush()
            answer: Checked = pickle.loads(_exactly(source, _SIZE.unpack(_exactly(source, 8))[0]))
        except (OSError, EOFError) as error:
            raise ImportRefused(f"line {first} and after could not be checked: {error}") from None
        return answer

    def close(self) -> None:
        self._lane.shutdown(wait=True, cancel_futures=True)
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


class _Checkers:
    """Where chunks are checked: a thread at first (SQLite leaves the interpreter's lock while
    it writes, so checking overlaps with it), worker processes once ``parallel_after`` bytes
    were read (checking then runs on cores of its own, and never holds the writer's lock), the
    chunks dealt to them in turn."""

    def __init__(self, parallel_after: int) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="clerk-audit-import")
        self._processes: list[_Checker] = []
        self._unread = parallel_after
        self._dealt = 0
        self.ahead = 2

    def submit(self, first: int, chunk: bytes) -> Future[Checked]:
        self._unread -= len(chunk)
        if not self._processes and self._unread < 0:
            self._processes = [_Checker() for _ in range(_checkers())]
            self.ahead = len(self._processes) + 2
        if not self._processes:
            return self._thread.submit(check_chunk, first, chunk)
        self._dealt += 1
        return self._processes[self._dealt % len(self._processes)].submit(first, chunk)

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
        for checker in self._processes:
            checker.close()


def checked_chunks(
    path: Path, parallel_after: int = PARALLEL_BYTES
) -> Generator[Checked, None, None]:
    """:func:`check_chunk` of each of :func:`chunks`, in order, checked a few chunks ahead
    (when the file cannot be read further: the chunks read before, then the error)."""
    checkers, pending = _Checkers(parallel_after), deque[Future[Checked]]()
    try:
        try:
            for first, chunk in chunks(path):
                pending.append(checkers.submit(first, chunk))
                if len(pending) > checkers.ahead:
                    yield pending.popleft().result()
        except ImportRefused:
            while pending:
                yield pending.popleft().result()
            raise
        while pending:
            yield pending.popleft().result()
    finally:
        checkers.close()
