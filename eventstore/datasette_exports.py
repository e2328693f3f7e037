"""A Datasette 0.65 plugin: whole exports, and canned queries a page at a time.

* **Whole exports.** ``/-/clerk-audit/export/<database>/<name>.csv`` (or ``.json``) answers
  every row of a canned query, or of a table or view with the filters, search, sort and
  columns of its page (the same query string), in one file: not cut at ``max_returned_rows``
  (Datasette's canned queries stop there, CSV included) nor at ``max_csv_mb``. The rows come
  from one statement on a connection of the export's own, so the file is one consistent
  snapshot, and they are streamed a chunk at a time (bounded memory); a client that goes away
  stops the export. JSON is an array of objects; a blob is ``{"$base64": true, "encoded": …}``
  as in Datasette's JSON, and base64 text in CSV. Each table and canned query page links to its
  export.
* **Pages.** Drawing a thousand rows of HTML takes Datasette about 350 ms, so a canned query
  whose SQL ends ``limit :_page_rows offset :_page_offset`` shows ``PAGE_ROWS`` rows a page
  with a "next page" link (``?_next=<offset>``, as Datasette pages a view; ``_size`` sets the
  page's rows, up to ``max_returned_rows``). Its JSON and CSV keep Datasette's limit unless
  asked for ``_size`` or ``_next``; its export has every row.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from datasette.filters import Filters
from datasette.plugins import pm
from datasette.utils import await_me_maybe, derive_named_parameters, escape_sqlite, tilde_decode
from datasette.utils.asgi import AsgiStream, BadRequest, Forbidden, NotFound
from datasette.views.database import MagicParameters
from datasette.views.table import TableView
from jinja2 import ChoiceLoader, FileSystemLoader

from eventstore.datasette_files import hookimpl
from eventstore.engine import sqlite3

PLUGIN_NAME = "clerk-audit-exports"
EXPORT_PREFIX = "/-/clerk-audit/export/"
PAGE_ROWS = 100
"""Rows on a canned query's HTML page."""
CHUNK_ROWS = 500
"""Rows read, encoded and sent at a time by an export."""
TEMPLATES = Path(__file__).resolve().parent / "templates"
_PAGING = ("_next", "_size")
"""Query-string arguments of a page that an export ignores (it has every row)."""


def export_url(database: str, name: str, fmt: str, query_string: str = "") -> str:
    """Where the whole export of ``name`` (a canned query, table or view) is."""
    path = f"{EXPORT_PREFIX}{quote(database, safe='')}/{quote(name, safe='')}.{fmt}"
    return f"{path}?{query_string}" if query_string else path


def _paged_args(request: Any) -> str:
    """The request's query string without its paging arguments."""
    pairs = [(k, v) for k, v in _pairs(request) if k not in _PAGING]
    return urlencode(pairs)


def _pairs(request: Any) -> list[tuple[str, str]]:
    return [(key, value) for key in request.args for value in request.args.getlist(key)]


# ------------------------------------------------------------------------------ pages ---


def page_size(request: Any, most: int) -> int:
    """The rows of a canned query's page: ``_size`` (1 to ``most``, or ``max``), else
    ``PAGE_ROWS`` for HTML and ``most + 1`` for JSON and CSV (Datasette then cuts at ``most``
    and says so, as before pages)."""
    asked = request.args.get("_size")
    html = request.url_vars.get("format") in (None, "", "html")
    if asked == "max":  # Datasette's own CSV link
        return most if html else most + 1
    if asked:
        try:
            return max(1, min(int(asked), most))
        except ValueError:
            raise BadRequest("_size must be a positive integer or max") from None
    return PAGE_ROWS if html else most + 1


def page_offset(request: Any) -> int:
    try:
        return max(0, int(request.args.get("_next") or 0))
    except ValueError:
        raise BadRequest("_next must be a row offset") from None


def magic_page(most: int) -> Callable[[str, Any], int]:
    """The ``:_page_rows`` and ``:_page_offset`` of canned queries; on the export route, every
    row (``-1``: no limit) from the first."""

    def value(key: str, request: Any) -> int:
        export = request.path.startswith(EXPORT_PREFIX)
        if key == "rows":
            return -1 if export else page_size(request, most)
        if key == "offset":
            return 0 if export else page_offset(request)
        raise KeyError(key)

    return value


# ---------------------------------------------------------------------- what to export ---


@dataclass(frozen=True)
class Selection:
    """One statement whose rows are the export."""

    sql: str
    params: Any  # a mapping; MagicParameters for a canned query


async def _visible(datasette: Any, request: Any, permission: tuple[str, tuple[str, str]]) -> None:
    database = permission[1][0]
    visible, _ = await datasette.check_visibility(
        request.actor, permissions=[permission, ("view-database", database), "view-instance"]
    )
    if not visible:
        raise Forbidden("You do not have permission to export this")


async def canned_selection(datasette: Any, request: Any, database: str, name: str) -> Selection:
    """A canned query with the request's parameters (missing ones empty, as on its page)."""
    query = await datasette.get_canned_query(database, name, request.actor)
    if query is None or query.get("write"):
        raise NotFound("No such query")
    await _visible(datasette, request, ("view-query", (database, name)))
    named = await derive_named_parameters(datasette.get_database(database), query["sql"])
    params = {key: request.args.get(key) or "" for key in named if not key.startswith("_")}
    return Selection(query["sql"], MagicParameters(params, request, datasette))


async def table_selection(datasette: Any, request: Any, database: str, name: str) -> Selection:
    """A table or view with its page's filters, search, sort and columns, in page order."""
    db = datasette.get_database(database)
    is_view = bool(await db.get_view_definition(name))
    if not is_view and not await db.table_exists(name):
        raise NotFound("No such table")
    await _visible(datasette, request, ("view-table", (database, name)))
    pks = [] if is_view else (await db.primary_keys(name) or ["rowid"])
    view = TableView(datasette)
    columns = await view.columns_to_select(await db.table_columns(name), pks, request)
    where, params = await _where(datasette, request, database, name)
    order = await _order(view, datasette, request, database, name, pks)
    sql = (
        f"select {', '.join(escape_sqlite(c) for c in columns)} from {escape_sqlite(name)}"
        f"{' where ' + ' and '.join(where) if where else ''}{order}"
    )
    return Selection(sql, params)


async def _where(
    datasette: Any, request: Any, database: str, table: str
) -> tuple[list[str], dict[str, Any]]:
    """The page's filters (``column__op=value``) and the filters of Datasette's hooks
    (``_search``, ``_where``, ``_through``), as the table page builds them."""
    pairs = [(k, v) for k, v in _pairs(request) if not (k.startswith("_") and "__" not in k)]
    where, params = Filters(sorted(pairs)).build_where_clauses(table)
    for hook in pm.hook.filters_from_request(
        request=request, table=table, database=database, datasette=datasette
    ):
        found = await await_me_maybe(hook)
        if found:
            where.extend(found.where_clauses)
            params.update(found.params)
    return where, params


async def _order(
    view: TableView, datasette: Any, request: Any, database: str, table: str, pks: list[str]
) -> str:
    """`` order by`` the page's sort (``_sort``, ``_sort_desc``, else the metadata's), then the
    primary key, as Datasette orders the pages after the first."""
    meta = datasette.table_metadata(database, table)
    sort, desc = request.args.get("_sort"), request.args.get("_sort_desc")
    if not sort and not desc:
        sort, desc = meta.get("sort"), meta.get("sort_desc")
    if sort and desc:
        raise BadRequest("Cannot use _sort and _sort_desc at the same time")
    keys = [escape_sqlite(pk) if pk != "rowid" else pk for pk in pks]
    column = sort or desc
    if column:
        if column not in await view.sortable_columns_for_table(database, table, pks == ["rowid"]):
            raise BadRequest(f"Cannot sort table by {column}")
        keys.insert(0, f"{escape_sqlite(column)}{' desc' if desc else ''}")
    return f" order by {', '.join(keys)}" if keys else ""


# ---------------------------------------------------------------------------- encoding ---


def _blob(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": True, "encoded": base64.b64encode(value).decode()}
    raise TypeError(type(value).__name__)


class JsonRows:
    """An array of objects, one per row."""

    content_type = "application/json; charset=utf-8"

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns, self.separator = list(columns), "["

    def head(self) -> str:
        return ""

    def rows(self, rows: Sequence[Sequence[Any]]) -> str:
        parts = []
        for row in rows:
            item = orjson.dumps(dict(zip(self.columns, row, strict=True)), default=_blob)
            parts.append(self.separator + item.decode())
            self.separator = ",\n"
        return "".join(parts)

    def tail(self) -> str:
        return "[]\n" if self.separator == "[" else "]\n"


class CsvRows:
    """A header line, then one line per row."""

    content_type = "text/csv; charset=utf-8"

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)

    def _lines(self, rows: Sequence[Sequence[Any]]) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        for row in rows:
            writer.writerow(
                [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in row]
            )
        return out.getvalue()

    def head(self) -> str:
        return self._lines([self.columns])

    def rows(self, rows: Sequence[Sequence[Any]]) -> str:
        return self._lines(rows)

    def tail(self) -> str:
        return ""


FORMATS: dict[str, type[JsonRows] | type[CsvRows]] = {"json": JsonRows, "csv": CsvRows}


# --------------------------------------------------------------------------- streaming ---


def _open(datasette: Any, database: str, selection: Selection) -> sqlite3.Cursor:
    """The selection's statement, started on a read-only connection of its own (one
    snapshot; not one of Datasette's, which a rebuild's swap may close)."""
    db = datasette.get_database(database)
    if db.is_memory:
        raise NotFound("No file to export from")
    uri = f"{Path(db.path).resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        datasette._prepare_connection(conn, database)
        return conn.execute(selection.sql, selection.params)
    except BaseException:
        conn.close()
        raise


async def _until_disconnect(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Chunks:
    """A cursor's rows a chunk at a time, read in worker threads; closing waits for a read
    still running (a request cancelled mid-read must not close the connection under it)."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor, self._lock = cursor, threading.Lock()

    def read(self) -> list[Any]:
        with self._lock:
            return self.cursor.fetchmany(CHUNK_ROWS)

    def close(self) -> None:
        with self._lock:
            self.cursor.connection.close()


def stream(cursor: sqlite3.Cursor, encoder: JsonRows | CsvRows, receive: Any) -> Any:
    """Write the cursor's rows a chunk at a time; stop early if the client goes away."""
    chunks = Chunks(cursor)

    async def write(response: Any) -> None:
        gone = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await response.write(encoder.head())
            while not gone.done():
                rows = await asyncio.to_thread(chunks.read)
                if not rows:
                    await response.write(encoder.tail())
                    break
                await response.write(encoder.rows(rows))
        finally:
            gone.cancel()
            chunks.close()

    return write


async def export(datasette: Any, request: Any, receive: Any) -> AsgiStream:
    """The export route: every row of a canned query, table or view (see module doc)."""
    database = tilde_decode(request.url_vars["database"])
    name, fmt = tilde_decode(request.url_vars["name"]), request.url_vars["format"]
    if database not in datasette.databases:
        raise NotFound("No such database")
    if await datasette.get_canned_query(database, name, request.actor) is not None:
        selection = await canned_selection(datasette, request, database, name)
    else:
        selection = await table_selection(datasette, request, database, name)
    try:
        cursor = await asyncio.to_thread(_open, datasette, database, selection)
    except sqlite3.Error as error:
        raise BadRequest(f"cannot export: {error}") from None
    encoder = FORMATS[fmt]([column[0] for column in cursor.description or ()])
    disposition = f'attachment; filename="{name}.{fmt}"'
    return AsgiStream(
        stream(cursor, encoder, receive),
        headers={"content-disposition": disposition},
        content_type=encoder.content_type,
    )


# ------------------------------------------------------------------------------ links ---


async def links(datasette: Any, request: Any, database: str, template: str) -> dict[str, Any]:
    """``clerk_audit``'s template variables: the page's exports and, on a paged canned query,
    where the next page is."""
    name = tilde_decode(request.url_vars.get("table") or "")
    if not name or not template.startswith(("query", "table")):
        return {}
    query = await datasette.get_canned_query(database, name, request.actor)
    if query is not None and query.get("write"):
        return {}
    args = _paged_args(request)
    found: dict[str, Any] = {
        "export_csv": export_url(database, name, "csv", args),
        "export_json": export_url(database, name, "json", args),
    }
    if query is not None and ":_page_rows" in query["sql"]:
        size, offset = page_size(request, datasette.max_returned_rows), page_offset(request)
        pairs = [(k, v) for k, v in _pairs(request) if k != "_next"]
        found["page"] = {
            "size": size, "first": offset + 1,
            "next_url": f"{request.path}?{urlencode([*pairs, ('_next', str(offset + size))])}",
        }  # fmt: skip
    return found


class AuditExports:
    """The plugin (see module doc)."""

    def __init__(self) -> None:
        self.__name__ = PLUGIN_NAME

    @hookimpl
    def register_routes(self) -> list[tuple[str, Any]]:
        return [(rf"^{EXPORT_PREFIX}(?P<database>[^/]+)/(?P<name>[^/]+)\.(?P<format>csv|json)$",
                 export)]  # fmt: skip

    @hookimpl
    def register_magic_parameters(self, datasette: Any) -> list[tuple[str, Any]]:
        return [("page", magic_page(datasette.max_returned_rows))]

    @hookimpl
    def prepare_jinja2_environment(self, env: Any) -> None:
        """Our ``query.html`` and ``table.html`` (each extends Datasette's) first."""
        env.loader = ChoiceLoader([FileSystemLoader(str(TEMPLATES)), env.loader])

    @hookimpl
    def extra_template_vars(
        self, template: str, database: str | None, request: Any, datasette: Any
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def found() -> dict[str, Any]:
            if request is None or database is None:
                return {"clerk_audit": {}}
            return {"clerk_audit": await links(datasette, request, database, template)}

        return found
