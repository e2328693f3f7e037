"""The SQLite library every part of clerk-audit uses, and what it can do.

One library for every process: two SQLite libraries in one process do not see each other's
POSIX locks on the same file. Where the ``pysqlite3-binary`` wheel installs (Linux x86-64, a
dependency there) it brings a current SQLite, which Datasette and sqlite-utils pick up by
themselves; elsewhere the interpreter's own ``sqlite3``. A feature newer than the oldest
SQLite we run on (Debian 12's 3.40) is tested for here, by version, and used where it is.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3
else:
    try:
        from pysqlite3 import dbapi2 as sqlite3
    except ImportError:  # no wheel for this platform: the interpreter's SQLite
        import sqlite3

FTS5_SECURE_DELETE = sqlite3.sqlite_version_info >= (3, 42, 0)
"""Whether FTS5's ``secure-delete`` option exists: a deleted row's tokens are removed from the
index's pages at once, instead of hidden until a merge rewrites them."""

__all__ = ["FTS5_SECURE_DELETE", "sqlite3"]
