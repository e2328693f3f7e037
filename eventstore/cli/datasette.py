"""``clerk-audit datasette``: Datasette on the live store, with the shipped metadata.

* **Mutable mode.** The store is passed as a plain file argument, never ``-i``: Datasette then
  reads it through ``mode=ro`` connections and sees every event the server commits, without a
  restart (``immutable`` would promise SQLite the file never changes, which is false here).
* **Metadata for the actual database name.** Datasette names a database after its file
  (``audit.db`` -> ``audit``) and keys metadata by that name, so ``data/metadata.yml`` is keyed
  ``audit``. For any other file name the entry is re-keyed in a temporary copy, which is removed
  when Datasette exits.
* **Plugins from an allow-list only.** Datasette 0.65 imports every installed ``datasette``
  entry point when ``datasette.plugins`` is first imported (``DATASETTE_LOAD_PLUGINS`` arrived
  in the 1.0 alphas; 0.65.5 ignores it). Its one switch is the ``sys._called_from_test``
  attribute, which skips that loading; we set it, load the entry points of the allowed
  distributions ourselves, check that nothing else is registered, and only then run
  Datasette's own command line in this process.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import signal
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click
import yaml

from eventstore.cli.options import db_option
from eventstore.db import translate
from eventstore.errors import ConfigurationError, StoreCorrupt
from eventstore.schema import APPLICATION_ID

SHIPPED_METADATA = Path(__file__).resolve().parents[2] / "data" / "metadata.yml"
"""``data/metadata.yml`` of the source checkout."""
METADATA_DATABASE = "audit"
"""The database key used in the metadata file (the name Datasette gives ``audit.db``)."""
ALLOWED_PLUGINS = frozenset({"datasette-pretty-json", "datasette-auth-tokens"})
"""Distributions whose ``datasette`` entry points may load; no other plugin does."""
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
_REFUSED = {
    "-i": "--immutable would hide every event stored after Datasette starts",
    "--immutable": "--immutable would hide every event stored after Datasette starts",
    "--plugins-dir": "plugins load from the allow-list only",
    "-m": "use `clerk-audit datasette --metadata PATH` instead",
    "--metadata": "use `clerk-audit datasette --metadata PATH` instead",
}


def database_name(db_path: Path) -> str:
    """The name Datasette 0.65 gives a database file: its stem (``data/audit.db`` -> ``audit``)."""
    return Path(db_path).stem


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


def metadata_for(database: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with its ``audit`` database entry keyed ``database`` instead.

    An entry already keyed ``database`` wins and is left alone.
    """
    databases = metadata.get("databases") or {}
    if database in databases or METADATA_DATABASE not in databases:
        return metadata
    rekeyed = {(database if key == METADATA_DATABASE else key): v for key, v in databases.items()}
    return {**metadata, "databases": rekeyed}


def check_store(db_path: Path) -> None:
    """Fail with one clear error unless ``db_path`` is a clerk-audit store with projections.

    Opened read-only: this command never writes to the store.
    """
    if not db_path.is_file():
        raise ConfigurationError(
            f"no store at {db_path} (start `clerk-audit serve --db {db_path}` once to create it)"
        )
    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise translate(error, db_path) from error
    try:
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        has_timeline = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_timeline'"
        ).fetchone()
    except sqlite3.Error as error:
        raise translate(error, db_path) from error
    finally:
        conn.close()
    if app_id != APPLICATION_ID:
        raise StoreCorrupt(f"{db_path} is a SQLite database but not a clerk-audit store")
    if not has_timeline:
        raise ConfigurationError(
            f"{db_path} has no projections yet (run `clerk-audit rebuild --db {db_path}`)"
        )


def _refuse(args: Sequence[str]) -> None:
    for arg in args:
        option = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
        if arg.startswith("-") and option in _REFUSED:
            raise ConfigurationError(f"datasette option {option} refused: {_REFUSED[option]}")


def serve_args(db_path: Path, metadata_file: Path, extra: Sequence[str]) -> list[str]:
    """Arguments for ``datasette``; the extra ones come last, so they override the defaults."""
    return [
        "serve", str(db_path), "--metadata", str(metadata_file),
        "--host", DEFAULT_HOST, "--port", str(DEFAULT_PORT), *extra,
    ]  # fmt: skip


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def load_allowed_plugins() -> set[str]:
    """Register the allowed plugins with Datasette's plugin manager, and nothing else.

    :returns: the names of the non-default plugins registered.
    :raises ConfigurationError: another plugin is registered (Datasette was imported earlier
        in this process, with every installed plugin).
    """
    if "datasette.plugins" not in sys.modules:
        # Datasette 0.65 skips loading installed plugins when this attribute exists.
        setattr(sys, "_called_from_test", True)  # noqa: B010
    from datasette.plugins import DEFAULT_PLUGINS, pm

    providers: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        for entry_point in dist.entry_points.select(group="datasette"):
            providers.setdefault(entry_point.name, set()).add(_canonical(dist.metadata["Name"]))
    allowed_names = {name for name, dists in providers.items() if dists <= ALLOWED_PLUGINS}
    for name in sorted(allowed_names):
        if pm.get_plugin(name) is None:
            pm.load_setuptools_entrypoints("datasette", name=name)
    loaded = {str(pm.get_name(plugin)) for plugin in pm.get_plugins()} - set(DEFAULT_PLUGINS)
    unexpected = loaded - allowed_names
    if unexpected:
        raise ConfigurationError(
            f"datasette plugins outside the allow-list are loaded: {', '.join(sorted(unexpected))}"
        )
    return loaded


class _Stopped(BaseException):
    """A stop signal arrived (uvicorn re-raises SIGTERM after its graceful shutdown)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


@contextmanager
def _cleanup_on_stop() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception, so ``with`` blocks inside clean up, then end
    the process by the same signal (as uvicorn and ``clerk-audit serve`` do)."""
    stops = (signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, _stop) for signum in stops}
    try:
        yield
    except _Stopped as stopped:
        signal.signal(stopped.signum, signal.SIG_DFL)
        signal.raise_signal(stopped.signum)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_datasette(args: list[str]) -> None:
    """Run Datasette's command line with ``args`` in this process (exits when it is done)."""
    load_allowed_plugins()
    from datasette.cli import cli as datasette_cli

    datasette_cli.main(args=args, prog_name="datasette")


@click.command("datasette")
@db_option
@click.option(
    "--metadata",
    "metadata_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=SHIPPED_METADATA,
    show_default="data/metadata.yml",
    help="Datasette metadata (YAML or JSON); its `audit` database entry applies to the store.",
)
@click.argument("datasette_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- DATASETTE_ARGS]")
def command(db_path: Path, metadata_path: Path, datasette_args: tuple[str, ...]) -> None:
    """Browse the store in Datasette, on http://127.0.0.1:8001 by default.

    Datasette reads the live store (mutable mode: new events show without a restart) with the
    shipped metadata and canned queries. Plugins load from an allow-list only
    (datasette-pretty-json, datasette-auth-tokens). Arguments after `--` go to `datasette
    serve` and override the defaults (--host, --port); -i/--immutable and --plugins-dir are
    refused.

    \b
    Example:
        clerk-audit datasette --db data/audit.db -- --port 8002 --setting default_allow_sql off
    """
    check_store(db_path)
    _refuse(datasette_args)
    metadata = metadata_for(database_name(db_path), load_metadata(metadata_path))
    with (
        _cleanup_on_stop(),
        tempfile.TemporaryDirectory(prefix="clerk-audit-datasette-") as folder,
    ):
        metadata_file = Path(folder) / "metadata.json"
        metadata_file.write_text(json.dumps(metadata, indent=2, default=str), encoding="utf-8")
        run_datasette(serve_args(db_path, metadata_file, datasette_args))
