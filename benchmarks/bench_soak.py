"""Does the router hold its memory under sustained load? (LiteLLM's users report leaks.)

The router runs with every feature on (as in bench_gateway: Redis store, classifier, telemetry
exported over OTLP, call log, exploration) against the fast mock upstream, and serves many
streamed calls at a steady concurrency. Resident memory is sampled after every block of calls;
the figures are the RSS after warm-up, at the end, and the least-squares slope over the second
half of the run (MB per 1,000 calls: about 0 when nothing leaks). Run:

    .venv/bin/python -m benchmarks.bench_soak [--calls 20000] [--concurrency 16]

Results: benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_gateway import (
    FULL,
    RESULTS,
    _listening,
    bench_redis,
    memory_mb,
    start_router,
    start_upstream,
    stop,
    stream_router,
    wait_until,
)
from router_service._proto import router_pb2_grpc
from tests.support.otlp_receiver import otlp_receiver
from tests.support.redis_server import free_port


def slope_per_thousand(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS (MB) against calls, per 1,000 calls."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    num = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    den = sum((x - mean_x) ** 2 for x in xs)
    return num / den * 1000 if den else 0.0


async def run(calls: int, concurrency: int, block: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    upstream_port = free_port()
    upstream = start_upstream(upstream_port)
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    procs: list[subprocess.Popen[bytes]] = [upstream]
    samples: list[tuple[int, float]] = []
    try:
        with bench_redis() as redis:
            async with otlp_receiver() as (otlp, _received), httpx.AsyncClient() as client:
                await wait_until(lambda: _listening(client, upstream_url), upstream)
                name, _, _ = FULL
                router, channel, _, _ = await start_router(workdir, name, upstream_url, redis, otlp)
                procs.append(router)
                stub = router_pb2_grpc.RouterStub(channel)
                done = 0
                started = time.perf_counter()

                async def worker(count: int) -> None:
                    for _ in range(count):
                        await stream_router(stub)

                while done < calls:
                    size = min(block, calls - done)
                    share, extra = divmod(size, concurrency)
                    await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))
                    done += size
                    samples.append((done, memory_mb(router.pid)["rss_mb"]))
                    print(f"{done:>7} calls  RSS {samples[-1][1]:6.1f} MB", flush=True)
                elapsed = time.perf_counter() - started
                await channel.close()
    finally:
        stop(procs)
        shutil.rmtree(workdir, ignore_errors=True)
    second_half = samples[len(samples) // 2 :]
    return {
        "calls": calls,
        "concurrency": concurrency,
        "calls_per_second": calls / elapsed,
        "rss_after_first_block_mb": samples[0][1],
        "rss_at_end_mb": samples[-1][1],
        "rss_peak_mb": max(mb for _, mb in samples),
        "slope_mb_per_1000_calls_second_half": slope_per_thousand(second_half),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--block", type=int, default=1_000, help="calls between RSS samples")
    args = parser.parse_args()
    result = asyncio.run(run(args.calls, args.concurrency, args.block))
    report = {
        "benchmark": "soak",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **result,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{args.calls} calls at {result['calls_per_second']:.0f}/s: RSS "
        f"{result['rss_after_first_block_mb']:.1f} MB after the first block, "
        f"{result['rss_at_end_mb']:.1f} MB at the end (peak {result['rss_peak_mb']:.1f}); "
        f"slope over the second half {result['slope_mb_per_1000_calls_second_half']:+.3f} "
        "MB per 1,000 calls"
    )


if __name__ == "__main__":
    main()
