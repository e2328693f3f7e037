"""Running the projector until told to stop (``clerk-audit project --follow``, and the
process ``serve`` starts and restarts).

It steps while there is work, waits :data:`IDLE_S` when it is up to date, and when a file
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

IDLE_S = 0.02
"""How long an up-to-date projector waits before it looks at the log again: the most it adds
to the projections' lag."""
RETRY_S = (0.5, 1.0, 2.0, 5.0)
"""Pauses after consecutive failures."""


def follow(
    log_path: LogLocation,
    projections_path: Path,
    stop: threading.Event,
    parent: int | None = None,
) -> None:
    """Keep the projections up to date until ``stop`` is set (or, with ``parent``, until that
    process is gone: a projector never outlives the server that started it)."""
    failures = 0
    projector: Projector | None = None
    while not stop.is_set() and (parent is None or os.getppid() == parent):
        try:
            if projector is None:
                ensure_current(log_path, projections_path)
                projector = Projector(log_path, projections_path)
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
        if not handled:
            stop.wait(IDLE_S)
    _discard(projector)


def _discard(projector: Projector | None) -> None:
    if projector is not None:
        projector.close()
