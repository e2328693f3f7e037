"""The instance filter (CONTRACT §2, §5): events of another Clerk instance are kept out of the
entity tables.

The log records the fact: every event keeps its envelope's ``instance_id`` (in its body, and
in the ``events.instance_id`` column set at ingest), whatever the settings. The judgement is
the projector's: with ``CLERK_AUDIT_INSTANCE_ID`` set (``eventstore.settings``), an event
whose envelope names another instance (a second endpoint's, or a dashboard "Send Example"
from another instance) gets its timeline row, marked with that instance, and no claim on any
entity. An event that names no instance (older envelopes, backfilled snapshots, the store's
own events) is projected as usual. Projections therefore depend on the log *and* this
setting: the projections file records the instance it was built for, and a file built for
another one is rebuilt, as one of another schema is.
"""

from __future__ import annotations


def other_instance(named: object, instance: str | None) -> str | None:
    """The instance an event names (``named``, its envelope's ``instance_id``) when it is not
    ``instance``, the configured one; None when the event belongs here (or nothing is
    configured, or the envelope names no instance, or an empty one)."""
    if instance is None or type(named) is not str or not named or named == instance:
        return None
    return named
