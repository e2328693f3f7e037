"""The SQLite library every part of clerk-audit uses, and what it can do.

One library for every process: Datasette and sqlite-utils use ``pysqlite3`` when it is
installed, and two SQLite libraries in one process do not see each other's POSIX locks on the
same file, so our code makes the same choice. clerk-audit does not install it: the
``pysqlite3-binary`` wheel (SQLite 3.51) was measured and made the 1M-event rebuild hold
1.3 GB instead of 0.8, most likely because that build forces temporary files, and so the
index sorts, into memory (``TEMP_STORE=3``; ``bench/analysis.md``). A feature newer than
Debian 12's SQLite (3.40), the oldest we run on, is tested for here by version.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3
else:
    try:
        from pysqlite3 import dbapi2 as sqlite3
    except ImportError:  # not installed (the usual case): the interpreter's SQLite
        import sqlite3

FTS5_SECURE_DELETE = sqlite3.sqlite_version_info >= (3, 42, 0)
"""Whether FTS5's ``secure-delete`` option exists: a deleted row's tokens are removed from the
index's pages at once, instead of hidden until a merge rewrites them."""

__all__ = ["FTS5_SECURE_DELETE", "sqlite3"]
