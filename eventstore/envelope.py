"""Reading the ``events`` columns out of a verified body (pydantic, tolerant of drift).

The append path parses a body only as far as the log's columns need: ``type``, ``timestamp``,
``instance_id`` and ``data``'s ``id``, ``updated_at`` and ``created_at``. Clerk adds fields
without notice and older events lack newer ones, so every field but ``type`` is optional and a
field of the wrong JSON type reads as absent instead of failing the event. Only a body that is
not a JSON object with a string ``type`` is refused (:class:`NotAnEvent`); the ingest route
stores such a body as quarantined. The projector reads the same bodies with the same
``eventstore.jsondoc.load_json``, so both agree on what is an event.
"""

from __future__ import annotations

from typing import Annotated, Any

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

from eventstore.jsondoc import parse_document
from eventstore.timefmt import iso_ms, normalise_ms


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


def parse_envelope(body: bytes) -> Envelope:
    """The envelope of a verified body.

    :raises NotAnEvent: the body is not a JSON object with a string ``type``.
    """
    return Envelope.model_validate(parse_document(body))
