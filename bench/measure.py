"""Run one command, report its wall time and peak memory: ``python -m bench.measure [S] -- CMD``.

Prints one JSON object: ``seconds``, ``peak_rss_mb``, ``largest_process_rss_mb``,
``returncode``, and the command's output. ``S`` is a time limit in seconds: past it the command
is killed and ``returncode`` is null.

``peak_rss_mb`` is the most the command and all its child processes held resident at once (a
rebuild runs worker processes), sampled every :data:`SAMPLE_S` (psutil).
``largest_process_rss_mb`` is the kernel's exact peak of the largest single process
(``RUSAGE_CHILDREN``: this process exists only to run the command).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

SAMPLE_S = 0.05


def process_family(root: int) -> list[psutil.Process]:
    """Process ``root`` and all its descendants (raises ``psutil.Error`` if it is gone)."""
    process = psutil.Process(root)
    return [process, *process.children(recursive=True)]


def tree_rss_kib(root: int) -> int:
    """The resident memory of ``root`` and all its descendants, in KiB."""
    total = 0
    try:
        family = process_family(root)
    except psutil.Error:
        return 0
    for member in family:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss // 1024
    return total


def _run(command: list[str], timeout: float | None) -> dict[str, Any]:
    """Run ``command`` in its own process group (killed whole at ``timeout``)."""
    started, peak, killed = time.perf_counter(), 0, False
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, text=True, start_new_session=True
        )
        while process.poll() is None:
            peak = max(peak, tree_rss_kib(process.pid))
            if timeout is not None and time.perf_counter() - started > timeout:
                os.killpg(process.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(SAMPLE_S)
        process.wait()
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return {"seconds": seconds, "returncode": None if killed else process.returncode,
                "stdout": out.read(), "stderr": err.read(), "peak_rss_mb": peak / 1024}  # fmt: skip


def main() -> None:
    split = sys.argv.index("--")
    timeout = float(sys.argv[1]) if split > 1 else None
    result = _run(sys.argv[split + 1 :], timeout)
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["largest_process_rss_mb"] = largest
    result["peak_rss_mb"] = max(result["peak_rss_mb"], largest)
    result["stdout"], result["stderr"] = result["stdout"][-4000:], result["stderr"][-4000:]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
