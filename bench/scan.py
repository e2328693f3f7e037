"""The parsing ceiling of a rebuild: ``python -m bench.scan PATH``.

Reads every body of the ``events`` log in ``position`` order and parses it with orjson (the
fastest JSON parser we have), doing nothing else. Prints the number of events parsed.
"""

from __future__ import annotations

import sys

import orjson

from eventstore.engine import sqlite3


def scan(path: str) -> int:
    """Parse every body in the log at ``path``; the number of events."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        count = 0
        for (body,) in conn.execute("SELECT body FROM events ORDER BY position"):
            orjson.loads(body)
            count += 1
        return count
    finally:
        conn.close()


if __name__ == "__main__":
    print(scan(sys.argv[1]))
