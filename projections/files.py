"""The projections file: a symlink to its current generation, swapped whole by a rebuild.

``data/audit.projections.db`` is a symbolic link to ``audit.projections.g<N>.db`` beside it.
A rebuild builds generation N+1 aside and publishes it by replacing the link atomically
(:func:`publish`). SQLite resolves the link when a connection opens, and names the file's
write-ahead log after the target, so a reader that opened generation N keeps reading it,
whole and consistent, while every new connection opens N+1: no connection can ever see a WAL
of another file. Readers that stay open (Datasette, the server's projector) notice the new
target (:func:`target`) and reopen. Renaming a new *file* over the old one instead would hand
the old file's WAL to the new one.

Deleting the link (or the whole file) is safe: the next ``project``, ``serve`` or ``rebuild``
creates generation 1 again.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from eventstore.db import connect, translate
from eventstore.engine import sqlite3
from eventstore.errors import ConfigurationError
from projections.tables import create_schema

SIDE_FILES = ("", "-wal", "-shm", "-journal")


def generation_path(path: Path, number: int) -> Path:
    """``audit.projections.db`` -> ``audit.projections.g<number>.db``."""
    return path.with_name(f"{path.stem}.g{number}{path.suffix}")


def generations(path: Path) -> dict[int, Path]:
    """Every generation file beside the projections path ``path``, by number."""
    pattern = re.compile(rf"{re.escape(path.stem)}\.g(\d+){re.escape(path.suffix)}")
    if not path.parent.is_dir():
        raise ConfigurationError(f"folder {path.parent} does not exist")
    found = ((pattern.fullmatch(f.name), f) for f in path.parent.iterdir())
    return {int(match.group(1)): file for match, file in found if match}


def next_generation(path: Path) -> Path:
    """A new generation file's path (one past every generation beside ``path``)."""
    return generation_path(path, max(generations(path), default=0) + 1)


def target(path: Path) -> Path | None:
    """The file the projections path leads to now; None if there is none."""
    resolved = path.resolve()
    return resolved if resolved.is_file() else None


def remove(file: Path) -> None:
    """Delete a generation file and its side files. Open connections keep reading it (the
    inode lives until they close); nothing can open it by name again."""
    for side in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{file}{side}")


def publish(path: Path, new: Path) -> None:
    """Make ``path`` lead to ``new`` in one atomic step, then delete what it led to before."""
    old = target(path)
    link = path.with_name(f".{path.name}.swap")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(new.name, link)
    os.replace(link, path)
    _sync_folder(path.parent)
    if old is not None and old != new.resolve():
        remove(old)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_empty(path: Path, instance: str | None = None) -> None:
    """Publish a new, empty generation at ``path`` (nothing projected yet), for the Clerk
    instance ``instance``."""
    new = next_generation(path)
    conn = connect(new, synchronous="NORMAL")
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        create_schema(conn, instance)
        conn.execute("COMMIT")
    except sqlite3.Error as error:
        raise translate(error, new) from error
    finally:
        conn.close()
    publish(path, new)
