"""Running the projector until told to stop (``clerk-audit project --follow``, and the
process ``serve`` starts and restarts).

It steps while a full batch is waiting, waits :data:`IDLE_S` once it has caught up, and when a file
fails (disk full, locked, replaced) it says so and tries again after a pause, without ever
touching ingest. A projections file built by another version is rebuilt first.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from eventstore.errors import StoreError
from eventstore.location import LogLocation
from projections.projector import OutOfDate, Projector
from projections.rebuild import ensure_current

log = logging.getLogger("clerk_audit.projector")

IDLE_S = 0.05
"""How long a projector that has caught up waits before it looks at the log again: the most it
adds to the projections' lag. Under load this is also what lets a batch gather: stepping again
at once committed a handful of events at a time, and each batch's transaction, checkpoint and
history re-derivation cost more than its events (the projector took 0.28 of a core beside
650 requests/s)."""
RETRY_S = (0.5, 1.0, 2.0, 5.0)
"""Pauses after consecutive failures."""


def follow(
    log_path: LogLocation,
    projections_path: Path,
    stop: threading.Event,
    parent: int | None = None,
    instance: str | None = None,
) -> None:
    """Keep the projections up to date for the Clerk instance ``instance`` until ``stop`` is
    set (or, with ``parent``, until that process is gone: a projector never outlives the
    server that started it)."""
    failures = 0
    projector: Projector | None = None
    while not stop.is_set() and (parent is None or os.getppid() == parent):
        try:
            if projector is None:
                ensure_current(log_path, projections_path, instance)
                projector = Projector(log_path, projections_path, instance=instance)
            handled = projector.step()
            failures = 0
        except (StoreError, OSError) as error:
            _discard(projector)
            projector = None
            if isinstance(error, OutOfDate):
                continue
            pause = RETRY_S[min(failures, len(RETRY_S) - 1)]
            failures += 1
            log.error("projector: %s; trying again in %.1f s", error, pause)
            stop.wait(pause)
            continue
        if handled < projector.batch:
            stop.wait(IDLE_S)
    _discard(projector)


def _discard(projector: Projector | None) -> None:
    if projector is not None:
        projector.close()
