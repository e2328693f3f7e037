"""Run one command, report its wall time and peak memory: ``python -m bench.measure [S] -- CMD``.

Prints one JSON object: ``seconds``, ``peak_rss_mb``, ``largest_process_rss_mb``,
``returncode``, and the command's output. ``S`` is a time limit in seconds: past it the command
is killed and ``returncode`` is null.

``peak_rss_mb`` is the most the command and all its child processes held resident at once (a
rebuild runs worker processes), sampled every :data:`SAMPLE_S` from ``/proc``.
``largest_process_rss_mb`` is the kernel's exact peak of the largest single process
(``RUSAGE_CHILDREN``: this process exists only to run the command).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SAMPLE_S = 0.05


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    """The resident memory of ``root`` and all its descendants, in KiB."""
    tree, total, todo = _children(), 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_kib(pid)
        todo.extend(tree.get(pid, ()))
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
