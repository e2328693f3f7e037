"""Checkpoints written by the server itself, every N events or M minutes, into a folder that
users ship elsewhere (``serve --checkpoint-dir``).

A thread of the server reads the log's chain head every :data:`POLL_S` through a read-only
connection, and writes ``checkpoint-<position>.json`` (signed when ``CLERK_AUDIT_SIGNING_KEY``
is set) once the log has grown by ``every_events`` since the last one, or has grown at all
and ``every_minutes`` have passed, and once more when the server stops. Each file is written
whole and renamed into place.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from eventstore.checkpoints import Checkpoint, load_private_key, note_check, sign
from eventstore.errors import AuditStoreError
from eventstore.location import LogLocation, open_log_reader
from eventstore.log import chain_head
from eventstore.timefmt import now_iso

log = logging.getLogger("clerk_audit.checkpointer")

POLL_S = 5.0


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    folder: Path
    every_events: int = 10_000
    every_minutes: float = 60.0
    key_file: Path | None = None


def write_checkpoint(folder: Path, checkpoint: Checkpoint) -> Path:
    """``folder/checkpoint-<position>.json``, written to a temporary name and renamed."""
    path = folder / f"checkpoint-{checkpoint.position:012d}.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(checkpoint.as_json())
    os.replace(partial, path)
    return path


class Checkpointer:
    """``with Checkpointer(log, policy):`` writes checkpoints in the block (see module doc)."""

    def __init__(self, db_path: LogLocation, policy: CheckpointPolicy) -> None:
        self._db_path = db_path
        self._policy = policy
        self._key = load_private_key(policy.key_file) if policy.key_file else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clerk-audit-checkpointer")
        self.last_position = 0
        self._last_time = time.monotonic()

    def __enter__(self) -> Checkpointer:
        self._policy.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop, with a last checkpoint if the log grew since the one before."""
        self._stop.set()
        self._thread.join()
        try:
            self.maybe_write(final=True)
        except (AuditStoreError, OSError) as error:
            log.error("could not write the last checkpoint: %s", error)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.maybe_write()
            except (AuditStoreError, OSError) as error:
                log.error("could not write a checkpoint: %s", error)

    def maybe_write(self, *, final: bool = False) -> Path | None:
        """Write a checkpoint if the policy says it is due (``final``: if the log grew at
        all); returns its path."""
        with closing(open_log_reader(self._db_path)) as conn:
            position, head = chain_head(conn)
        grown = position - self.last_position
        elapsed_min = (time.monotonic() - self._last_time) / 60
        due = final or grown >= self._policy.every_events
        if grown <= 0 or not (due or elapsed_min >= self._policy.every_minutes):
            return None
        checkpoint = Checkpoint(position, head.hex(), now_iso())
        if self._key is not None:
            checkpoint = sign(checkpoint, self._key)
        path = write_checkpoint(self._policy.folder, checkpoint)
        self.last_position, self._last_time = position, time.monotonic()
        signed = "signed" if checkpoint.signature else "unsigned"
        note_check(self._db_path, "checkpoint", position, checkpoint.chain, True, signed)
        log.info("checkpoint at position %d written to %s", position, path)
        return path
