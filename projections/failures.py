"""Events the projector could not apply: recorded in ``projection_errors``, the others go on.

One place for the shape of a failure and how it is told, so the projector, a rebuild and a
redaction's re-projection record them alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from eventstore.engine import sqlite3
from projections.schema import ERRORS

log = logging.getLogger("clerk_audit.projector")

Failure = tuple[int, str, str]
"""``(position, event_id, error)``: a row of ``projection_errors``."""


def failure(position: int, event_id: str, error: BaseException) -> Failure:
    """The row for an event that could not be projected. The message may quote the body
    (personal data): only its kind goes to the server's log."""
    log.warning("event at position %d could not be projected (%s); the others go on",
                position, type(error).__name__)  # fmt: skip
    return position, event_id, f"{type(error).__name__}: {error}"[:1000]


def record_failures(conn: sqlite3.Connection, failures: Sequence[Failure]) -> None:
    conn.executemany(f"INSERT OR REPLACE INTO {ERRORS} VALUES (?, ?, ?)", failures)
