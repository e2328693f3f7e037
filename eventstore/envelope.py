"""Parsing a verified body into Clerk's event envelope (pydantic, tolerant of drift).

Clerk adds fields without notice and older events lack newer ones, so every field but ``type``
is optional and a field of the wrong JSON type reads as absent instead of failing the event.
Only a body that is not a JSON object with a string ``type`` is refused (:class:`NotAnEvent`);
the ingest route stores such a body as quarantined.
"""

from __future__ import annotations

import json
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

from eventstore.timefmt import occurred_ms


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
JsonObject = Annotated[dict[str, Any] | None, Lenient]


def split_type(event_type: str) -> tuple[str | None, str | None]:
    """``("organizationMembership", "created")`` for ``organizationMembership.created``; a part
    that is missing or empty is None."""
    resource, dot, action = event_type.partition(".")
    return (resource or None, action or None) if dot else (None, None)


class ClerkModel(BaseModel):
    """Base of our Clerk payload models: unknown fields are ignored, models are read-only."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class HttpRequest(ClerkModel):
    client_ip: OptStr = None
    user_agent: OptStr = None


class EventAttributes(ClerkModel):
    http_request: Annotated[HttpRequest | None, Lenient] = None


class Envelope(ClerkModel):
    """The body of a Clerk webhook: ``{type, object, timestamp, instance_id, data, ...}``."""

    type: StrictStr
    object: OptStr = None
    timestamp: RawNumber = None
    instance_id: OptStr = None
    data: JsonObject = None
    event_attributes: Annotated[EventAttributes | None, Lenient] = None

    @property
    def object_type(self) -> str | None:
        """The resource in ``type``: ``organizationMembership`` in ``...Membership.created``."""
        return split_type(self.type)[0]

    @property
    def action(self) -> str | None:
        """The action in ``type`` (``created``, ``pastDue``, ...)."""
        return split_type(self.type)[1]

    @property
    def object_id(self) -> str | None:
        """``data.id`` when it is a string."""
        value = self.data.get("id") if self.data else None
        return value if isinstance(value, str) else None

    @property
    def occurred_ms(self) -> int | None:
        """The event's time (CONTRACT §6): envelope ``timestamp``, else ``data.updated_at``,
        else ``data.created_at``."""
        return occurred_ms(self.timestamp, self.data)

    @property
    def client_ip(self) -> str | None:
        request = self.event_attributes.http_request if self.event_attributes else None
        return request.client_ip or None if request else None

    @property
    def user_agent(self) -> str | None:
        request = self.event_attributes.http_request if self.event_attributes else None
        return request.user_agent or None if request else None


def load_json(body: bytes) -> Any:
    """Parse JSON bytes; integers past 64 bits fall back to the standard library."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise NotAnEvent(f"body is not valid JSON: {fast_error}") from None


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
