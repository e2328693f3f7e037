"""``clerk-audit datasette``: Datasette on a store's two files, with the shipped metadata.

* **Two databases.** The projections file is served as ``audit`` and the log as ``log``, by our
  own plugin (:mod:`eventstore.datasette_files`): ``datasette serve`` gets no file, so the names
  never depend on file names and the metadata (keyed ``audit`` and ``log``) always applies.
  ``audit``'s connections have the log attached as ``log``, and ``audit`` follows a rebuild's
  swap of the projections file without a restart.
* **Mutable mode.** Both files are read through ``mode=ro`` connections that see every commit,
  never ``-i`` (``immutable`` would promise SQLite the file never changes, which is false here).
* **Plugins from an allow-list only.** Datasette 0.65 imports every installed ``datasette``
  entry point when ``datasette.plugins`` is first imported (``DATASETTE_LOAD_PLUGINS`` arrived
  in the 1.0 alphas; 0.65.5 ignores it). Its one switch is the ``sys._called_from_test``
  attribute, which skips that loading; we set it, load the entry points of the allowed
  distributions ourselves, check that nothing else is registered, register our own plugin,
  and only then run Datasette's own command line in this process.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from eventstore.cli.options import db_option, projections_option
from eventstore.db import translate
from eventstore.engine import sqlite3
from eventstore.errors import ConfigurationError, StoreCorrupt
from eventstore.paths import projections_path
from eventstore.schema import APPLICATION_ID

SHIPPED_METADATA = Path(__file__).resolve().parents[2] / "data" / "metadata.yml"
"""``data/metadata.yml`` of the source checkout."""
ALLOWED_PLUGINS = frozenset({"datasette-pretty-json", "datasette-auth-tokens"})
"""Distributions whose ``datasette`` entry points may load; no other plugin does."""
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
SETTINGS: dict[str, bool] = {"suggest_facets": False}
"""Datasette settings clerk-audit serves with (``-- --setting NAME VALUE`` overrides them).
No facet suggestions: each is a query over a table page's rows for every column, about a
second per page for a search of the 1M-event timeline."""
_REFUSED = {
    "-i": "--immutable would hide every event stored after Datasette starts",
    "--immutable": "--immutable would hide every event stored after Datasette starts",
    "--plugins-dir": "plugins load from the allow-list only",
    "-m": "use `clerk-audit datasette --metadata PATH` instead",
    "--metadata": "use `clerk-audit datasette --metadata PATH` instead",
}


def load_metadata(path: Path = SHIPPED_METADATA) -> dict[str, Any]:
    """The metadata file at ``path`` (YAML or JSON) as a dict."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(f"cannot read metadata {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigurationError(f"metadata {path} is not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"metadata {path} is not a mapping")
    return loaded


def _read_only(path: Path, query: str) -> tuple[int, bool]:
    """``PRAGMA application_id`` of ``path`` and whether ``query`` finds a row, read-only."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise translate(error, path) from error
    try:
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        return app_id, conn.execute(query).fetchone() is not None
    except sqlite3.Error as error:
        raise translate(error, path) from error
    finally:
        conn.close()


def _has_table(name: str) -> str:
    return f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{name}'"


def check_store(db_path: Path, projections: Path) -> None:
    """Fail with one clear error unless ``db_path`` is a clerk-audit log and ``projections``
    its projections file. Both are opened read-only: this command never writes to the store.
    """
    if not db_path.is_file():
        raise ConfigurationError(
            f"no store at {db_path} (start `clerk-audit serve --db {db_path}` once to create it)"
        )
    app_id, has_events = _read_only(db_path, _has_table("events"))
    if app_id != APPLICATION_ID or not has_events:
        raise StoreCorrupt(f"{db_path} is a SQLite database but not a clerk-audit store")
    if not projections.is_file():
        raise ConfigurationError(
            f"no projections file at {projections} (run `clerk-audit project --db {db_path}`)"
        )
    if not _read_only(projections, _has_table("audit_timeline"))[1]:
        raise ConfigurationError(
            f"{projections} has no projections (run `clerk-audit project --db {db_path}`)"
        )


def _refuse(args: Sequence[str]) -> None:
    for arg in args:
        option = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
        if arg.startswith("-") and option in _REFUSED:
            raise ConfigurationError(f"datasette option {option} refused: {_REFUSED[option]}")


def serve_args(metadata_file: Path, extra: Sequence[str]) -> list[str]:
    """Arguments for ``datasette``: no file (our plugin adds the store's two); the extra ones
    come last, so they override the defaults."""
    settings = [
        arg for name, on in SETTINGS.items() for arg in ("--setting", name, "on" if on else "off")
    ]
    return [
        "serve", "--metadata", str(metadata_file),
        "--host", DEFAULT_HOST, "--port", str(DEFAULT_PORT), *settings, *extra,
    ]  # fmt: skip


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def load_allowed_plugins() -> set[str]:
    """Register the allowed plugins with Datasette's plugin manager, and nothing else.

    :returns: the names of the non-default plugins registered (our own left out).
    :raises ConfigurationError: another plugin is registered (Datasette was imported earlier
        in this process, with every installed plugin).
    """
    if "datasette.plugins" not in sys.modules:
        # Datasette 0.65 skips loading installed plugins when this attribute exists.
        setattr(sys, "_called_from_test", True)  # noqa: B010
    from datasette.plugins import DEFAULT_PLUGINS, pm

    from eventstore.datasette_files import OWN_PLUGINS

    providers: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        for entry_point in dist.entry_points.select(group="datasette"):
            providers.setdefault(entry_point.name, set()).add(_canonical(dist.metadata["Name"]))
    allowed_names = {name for name, dists in providers.items() if dists <= ALLOWED_PLUGINS}
    for name in sorted(allowed_names):
        if pm.get_plugin(name) is None:
            pm.load_setuptools_entrypoints("datasette", name=name)
    loaded = {str(pm.get_name(plugin)) for plugin in pm.get_plugins()}
    loaded -= {*DEFAULT_PLUGINS, *OWN_PLUGINS}
    unexpected = loaded - allowed_names
    if unexpected:
        raise ConfigurationError(
            f"datasette plugins outside the allow-list are loaded: {', '.join(sorted(unexpected))}"
        )
    return loaded


def run_datasette(args: list[str], log: Path, projections: Path) -> None:
    """Run Datasette's command line with ``args`` in this process, serving the log at ``log``
    and the projections at ``projections`` (exits when it is done)."""
    load_allowed_plugins()
    from datasette.cli import cli as datasette_cli

    from eventstore.datasette_files import StoreFiles, registered

    with registered(StoreFiles(log, projections, keep_memory="--memory" in args)):
        datasette_cli.main(args=args, prog_name="datasette")


@click.command("datasette")
@db_option
@projections_option
@click.option(
    "--metadata",
    "metadata_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=SHIPPED_METADATA,
    show_default="data/metadata.yml",
    help="Datasette metadata (YAML or JSON), keyed `audit` (the projections) and `log`.",
)
@click.argument("datasette_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- DATASETTE_ARGS]")
def command(
    db_path: Path,
    projections_db: Path | None,
    metadata_path: Path,
    datasette_args: tuple[str, ...],
) -> None:
    """Browse the store in Datasette, on http://127.0.0.1:8001 by default.

    The projections are the database `audit` (/audit/users, /audit/audit_timeline, the canned
    queries), the log is `log` (/log/events, /log/deliveries); queries on `audit` can read
    `log.events` too. Both are read live and read-only: new events show without a restart,
    and so do projections swapped in by `clerk-audit rebuild`. Plugins load from an
    allow-list only (datasette-pretty-json, datasette-auth-tokens). Arguments after `--` go
    to `datasette serve` and override the defaults (--host, --port, --setting suggest_facets
    off); -i/--immutable and --plugins-dir are refused. Every table and canned query page
    links to its whole export (CSV or JSON) at /-/clerk-audit/export/.

    \b
    Example:
        clerk-audit datasette --db data/audit.db -- --port 8002 --setting default_allow_sql off
    """
    projections = projections_path(db_path, projections_db)
    check_store(db_path, projections)
    _refuse(datasette_args)
    load_metadata(metadata_path)  # one clear error now rather than Datasette's traceback
    run_datasette(serve_args(metadata_path, datasette_args), db_path, projections)
