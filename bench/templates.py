"""Fast Clerk-like bodies: a sample envelope with some values turned into slots.

A :class:`BodyTemplate` is the compact JSON text of a shipped sample, split at the values we
vary (ids, names, times). Rendering joins the literal pieces with pre-encoded JSON values (a
``str.format`` would re-parse the whole 2-3 KB text on every call), so the load and log
generators can make tens of thousands of distinct, realistic bodies per second per core.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventstore.samples import sample_body

_MARK = "@@{}@@"
_SLOT = re.compile(r'"@@(\w+)@@"')


@dataclass(frozen=True, slots=True)
class BodyTemplate:
    """Literal JSON pieces with a named slot between each pair (``len(pieces) == len(slots)+1``)."""

    pieces: tuple[str, ...]
    slots: tuple[str, ...]

    def render(self, values: Mapping[str, str]) -> bytes:
        """The body with each slot replaced by its value, which must already be JSON text."""
        parts: list[str] = [""] * (2 * len(self.slots) + 1)
        parts[0::2] = self.pieces
        parts[1::2] = map(values.__getitem__, self.slots)
        return "".join(parts).encode()


def _set_path(document: Any, path: str, value: str) -> None:
    *parents, last = path.split(".")
    for key in parents:
        document = document[int(key)] if isinstance(document, list) else document[key]
    if isinstance(document, list):
        document[int(last)] = value
    else:
        document[last] = value


def template_from(sample: str, slots: Mapping[str, str], **fixed: Any) -> BodyTemplate:
    """A template from the sample named ``sample``: each ``path -> slot`` of ``slots`` becomes
    a slot (paths are dotted, list indexes are numbers); ``fixed`` sets top-level ``data`` keys."""
    document = json.loads(sample_body(sample))
    document["data"].update(fixed)
    for path, slot in slots.items():
        _set_path(document, path, _MARK.format(slot))
    split = _SLOT.split(json.dumps(document, separators=(",", ":"), ensure_ascii=False))
    return BodyTemplate(pieces=tuple(split[0::2]), slots=tuple(split[1::2]))


def json_str(value: str) -> str:
    """``value`` as JSON text (a quoted, escaped string)."""
    return json.dumps(value, ensure_ascii=False)
