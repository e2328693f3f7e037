"""The numeric settings read from the environment (CONTRACT §2) are checked strictly."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from eventstore.db import BUSY_TIMEOUT_MS
from eventstore.errors import ConfigurationError
from eventstore.settings import (
    BUSY_TIMEOUT_ENV,
    DEFAULT_MAX_BODY_BYTES,
    MAX_BODY_ENV,
    busy_timeout_ms,
    max_body_bytes,
)


def test_unset_or_blank_settings_take_their_defaults() -> None:
    assert max_body_bytes({}) == DEFAULT_MAX_BODY_BYTES
    assert busy_timeout_ms({BUSY_TIMEOUT_ENV: " "}) == BUSY_TIMEOUT_MS
    assert busy_timeout_ms({BUSY_TIMEOUT_ENV: "250"}) == 250


@pytest.mark.parametrize("value", ["0", "-1", "1e3", "lots", "5 s"])
@pytest.mark.parametrize(
    ("name", "read"), [(MAX_BODY_ENV, max_body_bytes), (BUSY_TIMEOUT_ENV, busy_timeout_ms)]
)
def test_a_setting_that_is_not_a_positive_integer_is_refused_by_name(
    name: str, read: Callable[[Mapping[str, str]], int], value: str
) -> None:
    with pytest.raises(ConfigurationError, match=name):
        read({name: value})
