"""Time values: ISO-8601 text with milliseconds, and Clerk's seconds-or-milliseconds stamps."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from eventstore.timefmt import LAST_MS, SECONDS_CUTOFF, iso_ms, normalise_ms, occurred_ms


@given(st.integers(0, LAST_MS))
def test_iso_ms_agrees_with_datetime(ms: int) -> None:
    seconds, millis = divmod(ms, 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    assert iso_ms(ms) == moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


@given(st.integers(1, SECONDS_CUTOFF - 1))
def test_seconds_are_scaled_to_milliseconds(seconds: int) -> None:
    assert normalise_ms(seconds) == seconds * 1000


@given(st.one_of(st.booleans(), st.text(), st.none(), st.integers(max_value=-1),
                 st.integers(min_value=LAST_MS + 1), st.just(float("nan"))))  # fmt: skip
def test_unusable_timestamps_read_as_absent(value: object) -> None:
    assert normalise_ms(value) is None


def test_the_event_time_prefers_the_envelope_timestamp() -> None:
    data = {"updated_at": 1_786_000_000_002, "created_at": 1_786_000_000_001}
    assert occurred_ms(1_786_000_000_003, data) == 1_786_000_000_003
    assert occurred_ms(None, data) == 1_786_000_000_002
    assert occurred_ms("soon", {"created_at": 1_786_000_000_001}) == 1_786_000_000_001
    assert occurred_ms(None, None) is None
