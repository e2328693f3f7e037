"""Reading the ``events`` columns out of a verified body (pydantic, tolerant of drift).

The append path parses a body only as far as the log's columns need: ``type``, ``timestamp``,
``instance_id`` and ``data``'s ``id``, ``updated_at`` and ``created_at``. Clerk adds fields
without notice and older events lack newer ones, so every field but ``type`` is optional and a
field of the wrong JSON type reads as absent instead of failing the event. Only a body that is
not a JSON object with a string ``type`` is refused (:class:`NotAnEvent`); the ingest route
stores such a body as quarantined. The projector reads the same bodies with the same
:func:`load_json`, so both agree on what is an event.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from eventstore.timefmt import iso_ms, normalise_ms


class NotAnEvent(ValueError):
    """A verified body that is not a JSON object with a string ``type``."""


def _absent_if_invalid(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


Lenient = WrapValidator(_absent_if_invalid)
"""Annotate a field with this to read a value of the wrong type as None."""

OptStr = Annotated[StrictStr | None, Lenient]
RawNumber = Annotated[StrictInt | StrictFloat | None, Lenient]
"""A JSON number kept as sent (timestamps are normalised where they are used)."""


def split_type(event_type: str) -> tuple[str | None, str | None]:
    """``("organizationMembership", "created")`` for ``organizationMembership.created``; a part
    that is missing or empty is None."""
    resource, dot, action = event_type.partition(".")
    return (resource or None, action or None) if dot else (None, None)


class ClerkModel(BaseModel):
    """Base of our Clerk payload models: unknown fields are ignored, models are read-only."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class DataRef(ClerkModel):
    """The parts of ``data`` the log keeps in columns."""

    id: OptStr = None
    updated_at: RawNumber = None
    created_at: RawNumber = None


class Envelope(ClerkModel):
    """The body of a Clerk webhook, as far as the ``events`` columns need it."""

    type: StrictStr
    timestamp: RawNumber = None
    instance_id: OptStr = None
    data: Annotated[DataRef | None, Lenient] = None

    @property
    def object_type(self) -> str | None:
        """The resource in ``type``: ``organizationMembership`` in ``...Membership.created``."""
        return split_type(self.type)[0]

    @property
    def object_id(self) -> str | None:
        """``data.id`` when it is a string."""
        return self.data.id if self.data else None

    @property
    def occurred_at(self) -> str | None:
        """The event's time (CONTRACT §6): envelope ``timestamp``, else ``data.updated_at``,
        else ``data.created_at``, as ISO-8601 text; None when none is usable."""
        data = self.data
        candidates = (self.timestamp, *((data.updated_at, data.created_at) if data else ()))
        for value in candidates:
            ms = normalise_ms(value)
            if ms is not None:
                return iso_ms(ms)
        return None


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


def parse_envelope(body: bytes) -> Envelope:
    """The envelope of a verified body.

    :raises NotAnEvent: the body is not a JSON object with a string ``type``.
    """
    return Envelope.model_validate(parse_document(body))
