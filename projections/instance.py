"""The instance filter (CONTRACT §2, §5): events of another Clerk instance are kept out of the
entity tables.

The log records the fact: every event keeps its envelope's ``instance_id`` (in its body, and
in the ``events.instance_id`` column set at ingest), whatever the settings. The judgement is
the projector's: with ``CLERK_AUDIT_INSTANCE_ID`` set, an event whose envelope names another
instance (a second endpoint's, or a dashboard "Send Example" from another instance) gets its
timeline row, marked with that instance, and no claim on any entity. An event that names no
instance (older envelopes, backfilled snapshots, the store's own events) is projected as
usual. Projections therefore depend on the log *and* this setting: the projections file
records the instance it was built for, and a file built for another one is rebuilt, as one of
another schema is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from eventstore.errors import ConfigurationError

INSTANCE_ENV = "CLERK_AUDIT_INSTANCE_ID"


def configured_instance(env: Mapping[str, str] | None = None) -> str | None:
    """``CLERK_AUDIT_INSTANCE_ID`` (None when unset or empty: no event is filtered)."""
    value = (os.environ if env is None else env).get(INSTANCE_ENV, "").strip()
    if not value:
        return None
    if not value.startswith("ins_") or not value.isascii() or " " in value:
        raise ConfigurationError(
            f"{INSTANCE_ENV} must be a Clerk instance id (ins_..., shown in the dashboard "
            "and in every event's instance_id)"
        )
    return value


def other_instance(named: object, instance: str | None) -> str | None:
    """The instance an event names (``named``, its envelope's ``instance_id``) when it is not
    ``instance``, the configured one; None when the event belongs here (or nothing is
    configured, or the envelope names no instance, or an empty one)."""
    if instance is None or type(named) is not str or not named or named == instance:
        return None
    return named
