"""Ending a command by SIGTERM or SIGHUP only after its ``with`` blocks have cleaned up.

uvicorn catches SIGTERM, stops serving, then raises the signal again once it is done; with the
default handler that ends the process at once, before the server could stop the projector it
started. Inside :func:`unwinding_on_stop`, the signal raises :class:`Stopped` instead, the
blocks unwind, and then the process ends by the same signal (so its exit status still says
SIGTERM).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """A stop signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


@contextmanager
def unwinding_on_stop() -> Iterator[None]:
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in STOP_SIGNALS}
    try:
        yield
    except Stopped as stopped:
        signal.signal(stopped.signum, signal.SIG_DFL)
        signal.raise_signal(stopped.signum)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
