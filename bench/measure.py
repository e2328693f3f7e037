"""Run one command, report its wall time and peak RSS: ``python -m bench.measure [S] -- CMD``.

This process exists only to run the command, so ``RUSAGE_CHILDREN`` holds exactly that
command's peak resident set (the largest of it and the children it waited for). Prints one
JSON object: ``seconds``, ``peak_rss_mb``, ``returncode``, and the command's output. ``S``
is a time limit in seconds: past it the command is killed and ``returncode`` is null.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any


def _run(command: list[str], timeout: float | None) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as expired:
        return {"seconds": time.perf_counter() - started, "returncode": None,
                "stdout": _text(expired.stdout), "stderr": _text(expired.stderr)}  # fmt: skip
    return {"seconds": time.perf_counter() - started, "returncode": done.returncode,
            "stdout": done.stdout, "stderr": done.stderr}  # fmt: skip


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def main() -> None:
    split = sys.argv.index("--")
    timeout = float(sys.argv[1]) if split > 1 else None
    result = _run(sys.argv[split + 1 :], timeout)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["stdout"], result["stderr"] = result["stdout"][-4000:], result["stderr"][-4000:]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
