"""Reading and writing JSON bodies, strictly and exactly, without pydantic.

Every part of the store that reads a stored body (the append path, the projector, verify,
the feed, import and redaction) parses it here, so all of them agree on what is JSON and
what is an event; the pydantic envelope (``eventstore.envelope``) is loaded only where a
body's columns are read, so processes that only check or copy bodies start without it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson


class NotAnEvent(ValueError):
    """A verified body that is not a JSON object with a string ``type``."""


MAX_DEPTH = 1024
"""orjson's nesting limit: the one limit on depth, whichever parser reads a body."""
RECURSION_LIMIT = 4 * MAX_DEPTH
"""The standard library's ``json`` (which keeps long integers exact) and its encoder (which
writes values orjson will not) recurse once per level and stop at the interpreter's recursion
limit, which counts the caller's frames too: with the default 1,000, whether a 980-level body
could be read depended on which process read it and how deep its stack was. Every process
that reads or writes bodies imports this module, so the limit is raised here, once."""
if sys.getrecursionlimit() < RECURSION_LIMIT:
    sys.setrecursionlimit(RECURSION_LIMIT)

_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_RUN = b"0" * 19


def has_long_number(body: bytes) -> bool:
    """Whether ``body`` has a run of 19 or more digits, which may be an integer past 64 bits
    (orjson reads those as floats). Mapping every digit to ``0`` and searching for a run of
    zeros takes a tenth of the time of the regex ``\\d{19,}``, which tried a match at every
    digit (measured on a 2.6 KB body: 12 against 162 us)."""
    return _LONG_RUN in body.translate(_DIGITS_AS_ZEROS)


def load_json(body: bytes, long_number: bool | None = None) -> Any:
    """Parse JSON bytes strictly (orjson's rules: UTF-8, no NaN or Infinity, no lone
    surrogates, at most 1,024 levels deep), keeping integers past 64 bits exact.

    orjson rounds such integers to floats without a word, so a body with a long run of digits
    is checked by orjson and then read by the standard library, which keeps them exact.

    :param long_number: :func:`has_long_number` of ``body``, when already known.
    :raises NotAnEvent: the bytes are not such JSON.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise NotAnEvent(f"body is not valid JSON: {error}") from None
    if not (has_long_number(body) if long_number is None else long_number):
        return document
    try:
        return json.loads(body)
    except RecursionError:
        raise NotAnEvent("body is not valid JSON: nested too deeply") from None


def dump_json(value: object) -> str:
    """Compact JSON text of a parsed value (integers past 64 bits, and nesting past orjson's
    254 levels for writing, through the standard library)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parse_document(body: bytes) -> dict[str, Any]:
    """The JSON object of a verified body.

    :raises NotAnEvent: the body is not a JSON object with a string ``type``.
    """
    document = load_json(body)
    if not isinstance(document, dict):
        raise NotAnEvent(f"body is JSON {type(document).__name__}, not an object")
    if not isinstance(document.get("type"), str):
        raise NotAnEvent('body has no string "type"')
    return document
