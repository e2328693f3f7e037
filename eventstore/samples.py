"""The sample Clerk events shipped with clerk-audit (one realistic body per event type).

They back ``clerk-audit send user.created`` and the tests. All values are invented.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

_PACKAGE = "eventstore.sample_events"


def sample_names() -> list[str]:
    """Every sample's name, which is its event type (``user.created``), sorted."""
    files = resources.files(_PACKAGE).iterdir()
    return sorted(
        Path(f.name).stem for f in files if f.name.endswith(".json") and not f.name.startswith("_")
    )


def sample_body(name: str) -> bytes:
    """The raw body of the sample named ``name``, byte-exact as shipped."""
    return resources.files(_PACKAGE).joinpath(f"{name}.json").read_bytes()


@cache
def _delivery_headers() -> dict[str, dict[str, str]]:
    text = resources.files(_PACKAGE).joinpath("_delivery_headers.json").read_text()
    headers: dict[str, dict[str, str]] = json.loads(text)
    return headers


def sample_event_id(name: str) -> str:
    """The plausible ``svix-id`` shipped for the sample ``name``."""
    entry = _delivery_headers().get(f"{name}.json") or _delivery_headers().get(name) or {}
    event_id = entry.get("svix-id")
    if not isinstance(event_id, str):
        raise KeyError(f"no svix-id for sample {name}")
    return event_id
