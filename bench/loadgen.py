"""The load generator, run as its own process: ``python -m bench.loadgen --port P ...``.

It loads and signs its requests first (secret from ``CLERK_WEBHOOK_SIGNING_SECRET``), waits for
``GET /healthz`` to answer 200, then keeps ``--connections`` keep-alive connections busy for
``--seconds`` on uvloop, and prints one JSON object with what it measured on stdout.

With ``--sample-ms`` it also samples ``/healthz`` on a connection of its own during the load,
and after it waits for the projections to catch up with the log (:mod:`bench.lag`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import uvloop

from bench.deliveries import cycle, delivery_order, load_pool, signed_requests
from bench.feedreaders import Reads, run_readers
from bench.lag import Sample, catch_up, sample_until, summarise
from bench.measure import process_family
from bench.stats import percentile
from bench.wire import HealthProbe, Tally, connection, wait_until_healthy

HEALTH_TIMEOUT_S = 60.0
ROLES = ("main", "writer", "projector", "other")
"""The server's processes, for its CPU: the event loop's (HTTP, verification), the log's
writer, the projector, anything else it started."""


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pool", type=Path, required=True, help="the cached event pool")
    parser.add_argument("--events", type=int, default=100_000, help="unique events to send")
    parser.add_argument("--skip", type=int, default=0, help="start this far into the pool")
    parser.add_argument("--redeliveries", type=float, default=0.2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrap", action="store_true", help="start over when all are sent")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server-pid", type=int, help="report this process's CPU use too")
    parser.add_argument(
        "--sample-ms",
        type=float,
        default=0.0,
        help="sample the projections' lag from /healthz this often (0: never)",
    )
    parser.add_argument(
        "--feed-readers",
        type=int,
        default=0,
        help="follow GET /events with this many readers during the load "
        "(token from CLERK_AUDIT_FEED_TOKEN)",
    )
    parser.add_argument(
        "--catch-up-timeout",
        type=float,
        default=60.0,
        help="the longest wait for the projections after the load",
    )
    return parser.parse_args()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _role(process: psutil.Process) -> str:
    """Which part of our server a process of its family is, by its command line."""
    command = " ".join(process.cmdline())
    if "eventstore.writer_process" in command:
        return "writer"
    return "projector" if " project " in f"{command} " else "other"


def _seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _process_cpu(pid: int | None) -> dict[str, float]:
    """CPU seconds used so far by process ``pid`` with its threads (``main``), and by each kind
    of child process our server starts (:data:`ROLES`); NaN if unknown."""
    if not pid:
        return dict.fromkeys(ROLES, math.nan)
    try:
        root, *children = process_family(pid)
        cpu = dict.fromkeys(ROLES, 0.0) | {"main": _seconds(root)}
        for child in children:
            cpu[_role(child)] += _seconds(child)
    except psutil.Error:
        return dict.fromkeys(ROLES, math.nan)
    return cpu


async def _load(port: int, requests: Iterator[bytes], args: argparse.Namespace) -> Tally:
    tally = Tally()
    exhausted = False

    def next_request() -> bytes | None:
        nonlocal exhausted
        request = next(requests, None)
        exhausted = exhausted or request is None
        return request

    deadline = time.perf_counter() + args.seconds
    await asyncio.gather(
        *(connection(port, next_request, deadline, tally) for _ in range(args.connections))
    )
    tally.errors["exhausted"] += int(exhausted)
    return tally


def _summary(tally: Tally, seconds: float) -> dict[str, Any]:
    latencies = sorted(tally.latencies_ns)
    ok = sum(count for status, count in tally.statuses.items() if 200 <= status < 300)
    return {
        "requests": len(latencies),
        "ok": ok,
        "stored": tally.stored,
        "duplicate": tally.duplicate,
        "non_2xx": {str(s): n for s, n in tally.statuses.items() if not 200 <= s < 300},
        "errors": {name: n for name, n in tally.errors.items() if name != "exhausted"},
        "exhausted": bool(tally.errors["exhausted"]),
        "seconds": seconds,
        "requests_per_s": len(latencies) / seconds,
        "stored_per_s": tally.stored / seconds,
        "p50_ms": percentile(latencies, 50) / 1e6,
        "p99_ms": percentile(latencies, 99) / 1e6,
        "max_ms": latencies[-1] / 1e6 if latencies else 0.0,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    built = time.perf_counter()
    events = load_pool(args.pool, args.skip + args.events)[args.skip :]
    order = delivery_order(len(events), args.redeliveries, seed=args.seed)
    secret = os.environ["CLERK_WEBHOOK_SIGNING_SECRET"]
    requests = signed_requests(events, secret, args.port)
    build_s = time.perf_counter() - built
    await wait_until_healthy(args.port, HEALTH_TIMEOUT_S)
    probe, stop = HealthProbe(args.port), asyncio.Event()
    during: list[Sample] = []
    after: list[Sample] = []
    sampler = asyncio.create_task(sample_until(probe, args.sample_ms / 1000, stop, during))
    if not args.sample_ms:
        stop.set()
    cpu, server_cpu = _own_cpu(), _process_cpu(args.server_pid)
    started = time.perf_counter()
    reads, readers = _start_readers(args, started + args.seconds)
    tally = await _load(args.port, cycle(order, requests, wrap=args.wrap), args)
    ended = time.perf_counter()
    await _stop(readers)
    seconds = ended - started
    server_after = _process_cpu(args.server_pid)
    summary = _summary(tally, seconds)
    summary["loadgen_cpu"] = (_own_cpu() - cpu) / seconds
    summary["server_cpu"] = sum(server_after[r] - server_cpu[r] for r in ROLES) / seconds
    for role in ROLES:
        summary[f"server_{role}_cpu"] = (server_after[role] - server_cpu[role]) / seconds
    summary["build_s"] = build_s
    if args.feed_readers:
        summary["feed"] = {"readers": args.feed_readers, "requests": reads.requests,
                           "events": reads.events, "failures": reads.failures}  # fmt: skip
    stop.set()
    await sampler
    if args.sample_ms:
        caught_up = await catch_up(probe, ended, args.catch_up_timeout, after)
        summary |= summarise(during, after, caught_up, summary["stored_per_s"])
    probe.close()
    summary["mean_body_bytes"] = sum(len(body) for _, body in events) / max(len(events), 1)
    return summary


def _start_readers(args: argparse.Namespace, deadline: float) -> tuple[Reads, asyncio.Task[None]]:
    reads = Reads()
    token = os.environ.get("CLERK_AUDIT_FEED_TOKEN", "") if args.feed_readers else ""
    job = run_readers(args.port, token, args.feed_readers, deadline, reads)
    return reads, asyncio.create_task(job)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main() -> None:
    args = _arguments()
    print(json.dumps(uvloop.run(_main(args))))


if __name__ == "__main__":
    main()
