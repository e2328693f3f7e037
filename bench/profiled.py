"""``python -m bench.profiled OUT COMMAND [ARGS]``: a ``clerk-audit`` command under pyinstrument.

The command's module (for ``serve``: svix, uvicorn, the app) is imported before the profiler
starts, so the profile is the command's run, not its start-up; the session is saved to ``OUT``
(a ``.pyisession`` file) when the command ends, by itself or by SIGINT (which uvicorn turns
into a graceful stop, then re-raises: SIGTERM's default action would end the process before
anything is saved).
"""

from __future__ import annotations

import gc
import importlib
import sys

from pyinstrument import Profiler

from eventstore.cli import COMMANDS, cli

INTERVAL_S = 0.001


def main() -> None:
    out, command = sys.argv[1], sys.argv[2]
    importlib.import_module(COMMANDS[command])
    gc.collect()
    # async_mode "disabled": a coroutine's time is its running time only; the time it waits
    # (for the writer's commit, for the next request) shows as the event loop's own.
    profiler = Profiler(interval=INTERVAL_S, async_mode="disabled")
    profiler.start()
    try:
        cli.main(sys.argv[2:], prog_name="clerk-audit")
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        profiler.stop()
        session = profiler.last_session
        if session is not None:
            session.save(out)


if __name__ == "__main__":
    main()
