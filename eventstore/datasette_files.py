"""A Datasette 0.65 plugin that serves a store's two files and follows a rebuild's swap.

* **Two databases, fixed names.** The projections file is served as ``audit`` and the log as
  ``log``, whatever the files are called, so URLs (``/audit/users``, ``/log/events``) and the
  metadata's keys never depend on a file name. Both are mutable (``mode=ro`` connections that
  see every commit), never immutable, and refuse writes.
* **Queries over both files.** Every connection of ``audit`` has the log attached read-only as
  schema ``log``, so a canned query on ``audit`` can read ``log.events``.
* **Following a swap.** A rebuild re-points the projections path (a symlink) at a new
  generation file. SQLite resolves the link when a connection opens, so open connections stay
  on the old generation. Before each request one ``stat`` of the path (a few microseconds)
  compares the file it names with the one ``audit`` was opened on; when they differ, ``audit``
  becomes a new :class:`PinnedDatabase` on the new file, and the old one is retired: its
  connections close as soon as no query runs on them, so a deleted generation holds no file
  descriptor.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from datasette import hookimpl as _hookimpl
from datasette.database import Database
from datasette.handle_exception import handle_exception as datasette_error_page
from datasette.views.base import DatasetteError
from starlette.types import ASGIApp, Receive, Scope, Send

from eventstore.engine import sqlite3
from eventstore.errors import ConfigurationError

PROJECTIONS = "audit"
"""The database name of the projections file (the metadata's ``databases: audit:``)."""
LOG = "log"
"""The database name of the log, and the schema it is attached as to ``audit``."""
PLUGIN_NAME = "clerk-audit"
OWN_PLUGINS = frozenset(
    {PLUGIN_NAME, "clerk-audit-pages", "clerk-audit-charts", "clerk-audit-exports"}
)
"""Our plugins: this one, ``eventstore.datasette_pages``, ``eventstore.datasette_charts`` and
``eventstore.datasette_exports``."""

F = TypeVar("F", bound=Callable[..., Any])
hookimpl = cast(Callable[[F], F], _hookimpl)
T = TypeVar("T")

_cached = threading.local()
"""Per thread: database name -> (the :class:`PinnedDatabase`, its connection in this thread)."""


class PinnedDatabase(Database):  # type: ignore[misc]
    """A read-only Datasette database on one file (one generation of the projections).

    Datasette 0.65.5 caches each thread's connection under the database's *name*
    (``datasette.database.connections``), so a new ``audit`` would reuse the old generation's
    connections. This class caches under its own identity instead and closes the connection it
    replaces. Once retired, it closes its idle connections at once and each busy one when its
    query ends; a request that straddles the swap finishes on one-off connections.
    """

    def __init__(self, datasette: Any, path: str) -> None:
        super().__init__(datasette, path=path, is_mutable=True)
        self.identity = _identity(path)
        self._lock = threading.Lock()
        self._busy: set[sqlite3.Connection] = set()
        self._retired = False

    async def execute_fn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with this file's connection for the current thread."""
        if self.ds.executor is None:
            return self._run(fn)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ds.executor, self._run, fn)

    async def execute_write_fn(self, fn: Any, block: bool = True) -> Any:
        """Refuse: clerk-audit's Datasette never writes to the store."""
        raise sqlite3.OperationalError(f"the {self.name} database is read-only")

    def retire(self) -> None:
        """Stop using this file: close the idle connections now, the busy ones when done."""
        with self._lock:
            self._retired = True
            idle = [c for c in self._all_file_connections if c not in self._busy]
        for conn in idle:
            conn.close()

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._acquire()
        try:
            return fn(conn)
        finally:
            self._release(conn)

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._retired:
                return self._open()
            owner, conn = getattr(_cached, self.name, (None, None))
            if owner is not self or conn is None:
                if conn is not None:
                    conn.close()  # the previous generation's, idle: it is this thread's
                conn = self._open()
                setattr(_cached, self.name, (self, conn))
            self._busy.add(conn)
            return cast(sqlite3.Connection, conn)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._busy.discard(conn)
            if self._retired:
                conn.close()

    def _open(self) -> sqlite3.Connection:
        conn = cast(sqlite3.Connection, self.connect())
        self.ds._prepare_connection(conn, self.name)
        return conn


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names, following symlinks; None if it is gone."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class StoreFiles:
    """The plugin: ``audit`` and ``log`` for one store, registered with Datasette's plugin
    manager by :func:`eventstore.cli.datasette.run_datasette` (or a test)."""

    def __init__(self, log_path: Path, projections_path: Path, *, keep_memory: bool = False):
        self.__name__ = PLUGIN_NAME  # what /-/plugins.json calls it
        self.log_path = log_path.resolve()
        self.projections_path = projections_path.absolute()
        self._projections_name = str(self.projections_path)  # stat()ed per request: no Path
        self.keep_memory = keep_memory

    @hookimpl
    def startup(self, datasette: Any) -> None:
        """Serve the projections as ``audit`` and the log as ``log`` (and ``_memory`` not)."""
        taken = {PROJECTIONS, LOG} & set(datasette.databases)
        if taken:
            raise ConfigurationError(f"datasette already serves a database named {min(taken)}")
        if "_memory" in datasette.databases and not (self.keep_memory or datasette.crossdb):
            datasette.remove_database("_memory")
        datasette.add_database(self._projections(datasette), name=PROJECTIONS)
        datasette.add_database(PinnedDatabase(datasette, str(self.log_path)), name=LOG)

    @hookimpl
    def prepare_connection(self, conn: sqlite3.Connection, database: str) -> None:
        """Attach the log read-only as ``log`` to every connection of ``audit``."""
        if database == PROJECTIONS:
            conn.execute(f"ATTACH DATABASE ? AS {LOG}", [f"{self.log_path.as_uri()}?mode=ro"])

    @hookimpl
    def handle_exception(self, datasette: Any, request: Any, exception: Exception) -> Any:
        """Answer a query of several statements 400, as Datasette does on the interpreter's
        ``sqlite3``: ``pysqlite3``, when installed (``eventstore.engine``), raises ``Warning``
        for it, not ``ProgrammingError``, and Datasette would answer 500."""
        if not isinstance(exception, sqlite3.Warning):
            return None
        invalid = DatasetteError(str(exception), title="Invalid SQL", status=400)
        return datasette_error_page(datasette, request, invalid)

    @hookimpl
    def asgi_wrapper(self, datasette: Any) -> Callable[[ASGIApp], ASGIApp]:
        """Check before each HTTP request whether the projections were swapped."""

        def wrap(app: ASGIApp) -> ASGIApp:
            async def follow(scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] == "http":
                    self.follow(datasette)
                await app(scope, receive, send)

            return follow

        return wrap

    def follow(self, datasette: Any) -> None:
        """Point ``audit`` at the file the projections path names now, if it changed.

        Runs on the event loop between requests' awaits, so no request sees half a swap; one
        already running keeps the Database object it started with.
        """
        current = datasette.databases.get(PROJECTIONS)
        now = _identity(self._projections_name)
        if now is None or not isinstance(current, PinnedDatabase) or now == current.identity:
            return
        replacement = self._projections(datasette)
        replacement.name = replacement.route = PROJECTIONS
        # As Datasette's add_database does, but in place (it would append: the index's order).
        databases = datasette.databases.copy()
        databases[PROJECTIONS] = replacement
        datasette.databases = databases
        current.retire()

    def _projections(self, datasette: Any) -> PinnedDatabase:
        """A database on the generation file the projections path names now."""
        return PinnedDatabase(datasette, os.path.realpath(self.projections_path))


@contextmanager
def registered(files: StoreFiles) -> Iterator[StoreFiles]:
    """``files`` registered with Datasette's plugin manager for the ``with`` block (in place of
    an earlier registration), so a ``Datasette`` started inside serves the store."""
    from datasette.plugins import pm

    from eventstore.datasette_charts import PLUGIN_NAME as CHARTS
    from eventstore.datasette_charts import AuditCharts
    from eventstore.datasette_exports import PLUGIN_NAME as EXPORTS
    from eventstore.datasette_exports import AuditExports
    from eventstore.datasette_pages import PLUGIN_NAME as PAGES
    from eventstore.datasette_pages import AuditPages

    plugins = {
        PLUGIN_NAME: files, PAGES: AuditPages(), CHARTS: AuditCharts(), EXPORTS: AuditExports()
    }  # fmt: skip
    for name, plugin in plugins.items():
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        pm.register(plugin, name=name)
    try:
        yield files
    finally:
        for name in plugins:
            pm.unregister(name=name)
