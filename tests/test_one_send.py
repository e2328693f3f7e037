"""The ingest server's transport (``eventstore.http_server._OneSendPerTurn``): what uvicorn
writes within one turn of the event loop reaches the socket as one write, in order; a large
write is not held back; closing loses nothing written before it."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.http_server import HELD_BYTES, _OneSendPerTurn


class Recording(asyncio.Transport):
    """A transport that records what reaches it (the socket's side of the wrapper)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 1234


async def _turn() -> None:
    """Let the loop run one turn (and the callbacks it had scheduled)."""
    await asyncio.sleep(0)


def _run(turns: list[list[bytes]], close_after: int | None) -> Recording:
    async def go() -> Recording:
        socket = Recording()
        wrapper = _OneSendPerTurn(socket, asyncio.get_running_loop())
        for n, writes in enumerate(turns):
            for data in writes:
                wrapper.write(data)
            if close_after == n:
                wrapper.close()
                wrapper.write(b"after close")
            await _turn()
        return socket

    return asyncio.run(go())


def test_writes_of_one_turn_leave_as_one() -> None:
    socket = _run([[b"HTTP/1.1 200 OK\r\n\r\n", b"{}"], [b"next"]], None)
    assert socket.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}", b"next"]


def test_nothing_leaves_before_the_turn_ends() -> None:
    async def go() -> list[bytes]:
        socket = Recording()
        wrapper = _OneSendPerTurn(socket, asyncio.get_running_loop())
        wrapper.write(b"head")
        held = list(socket.writes)
        await _turn()
        return [*held, b"|", *socket.writes]

    assert asyncio.run(go()) == [b"|", b"head"]


def test_close_sends_what_is_held_first() -> None:
    socket = _run([[b"head", b"body"]], close_after=0)
    assert socket.writes == [b"headbody"] and socket.closed


def test_a_large_write_is_not_held() -> None:
    async def go() -> list[bytes]:
        socket = Recording()
        wrapper = _OneSendPerTurn(socket, asyncio.get_running_loop())
        wrapper.write(b"head")
        wrapper.write(b"x" * HELD_BYTES)
        return list(socket.writes)

    assert asyncio.run(go()) == [b"head" + b"x" * HELD_BYTES]


def test_everything_else_is_the_transports() -> None:
    async def go() -> int:
        wrapper = _OneSendPerTurn(Recording(), asyncio.get_running_loop())
        return wrapper.get_write_buffer_size()  # type: ignore[no-any-return]

    assert asyncio.run(go()) == 1234


_CHUNK = st.binary(min_size=0, max_size=HELD_BYTES // 3)


@settings(max_examples=60, deadline=None)
@given(
    turns=st.lists(st.lists(_CHUNK, max_size=5), min_size=1, max_size=6),
    close=st.none() | st.integers(min_value=0, max_value=5),
)
def test_bytes_arrive_whole_and_in_order(turns: list[list[bytes]], close: int | None) -> None:
    """Whatever the writes and turns: the socket gets exactly the bytes written up to the
    close, in order, and at most one write per turn unless the held bytes reached the bound."""
    socket = _run(turns, close)
    kept = turns if close is None or close >= len(turns) else turns[: close + 1]
    assert b"".join(socket.writes) == b"".join(b"".join(t) for t in kept)
    bound = sum(sum(len(d) for d in t) // HELD_BYTES for t in kept)
    assert len(socket.writes) <= len(kept) + bound
