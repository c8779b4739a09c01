"""Gateways under concurrent load: throughput, latency and CPU as concurrency rises.

`bench_gateway` sends one call at a time; a gateway in production serves many at once, and what
its users feel under load (LiteLLM's report tens of milliseconds of overhead) is queueing for
its CPU. Here each gateway in turn serves a closed loop of `C` clients, each sending its next
streamed call as soon as the last one ends, for `--seconds` at each concurrency `C` (after a
warm-up of a second), against the fast mock upstream streaming 50 tokens (`bench_gateway`'s).
Per level: calls completed per second, time to first token and to the last token (p50, p99),
the gateway process's CPU per stream, and the load generator's own CPU per call (it shares the
machine's two cores with the gateway and the upstream, so at saturation the three together set
the throughput). Gateways:

- *router*: `llm-router serve` with every feature on, as in `bench_gateway` (Redis budgets and
  rate limits, the classifier, OTLP export, the call log, exploration), called over gRPC;
- *LiteLLM* (`--litellm`) 1.108.7 proxy at its lightest (no database), over its OpenAI API;
- *direct* (`--direct`): the client streams from the upstream itself, the floor of the machine.

Run:

    .venv/bin/python -m benchmarks.bench_load [--concurrency 1 8 32 64] [--seconds 10] [--litellm]

Results: benchmarks/results/load.json. Traffic stays on loopback; every level ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_gateway import (
    FULL,
    LITELLM_KEY,
    LITELLM_VERSION,
    RESULTS,
    TOKENS,
    _listening,
    bench_redis,
    cpu_seconds,
    percentile,
    start_litellm,
    start_router,
    start_upstream,
    stop,
    stream_openai_timed,
    timed_route,
    wait_until,
)
from router_service._proto import router_pb2_grpc
from tests.support.otlp_receiver import otlp_receiver
from tests.support.redis_server import free_port

# One call: (seconds to its first token, seconds to its end).
Call = Callable[[], Awaitable[tuple[float, float]]]


async def route_timed(stub: router_pb2_grpc.RouterStub) -> tuple[float, float]:
    sent, first, end = await timed_route(stub)
    return first - sent, end - sent


async def closed_loop(call: Call, concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` clients calling back to back until `seconds` have passed; calls that end
    after the deadline still count towards latency, not towards throughput."""
    ttft: list[float] = []
    total: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds
    completed = 0

    async def client() -> None:
        nonlocal completed
        while time.perf_counter() < deadline:
            try:
                first, end = await call()
            except Exception as exc:  # counted and reported, never hidden
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            ttft.append(first * 1000)
            total.append(end * 1000)
            if time.perf_counter() <= deadline:
                completed += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {
        "elapsed_s": time.perf_counter() - started,
        "calls": len(ttft),
        "completed_in_window": completed,
        "errors": len(errors),
        "first_errors": sorted(set(errors))[:3],
        "ttft_ms": ttft,
        "total_ms": total,
    }


async def measure(
    name: str, call: Call, pid: int | None, levels: list[int], seconds: float
) -> list[dict[str, Any]]:
    rows = []
    for concurrency in levels:
        await closed_loop(call, concurrency, 1.0)  # warm-up at this level
        await asyncio.sleep(0.5)  # background work of the warm-up (settles, exports)
        gateway_cpu = cpu_seconds(pid) if pid else 0.0
        client_cpu = time.process_time()
        run = await closed_loop(call, concurrency, seconds)
        client_cpu = time.process_time() - client_cpu
        await asyncio.sleep(0.5)
        gateway_cpu = (cpu_seconds(pid) - gateway_cpu) if pid else 0.0
        ttft, total = run.pop("ttft_ms"), run.pop("total_ms")
        row = {
            "gateway": name,
            "concurrency": concurrency,
            **run,
            "calls_per_second": run["completed_in_window"] / seconds,
            "ttft_p50_ms": percentile(ttft, 0.5),
            "ttft_p99_ms": percentile(ttft, 0.99),
            "total_p50_ms": percentile(total, 0.5),
            "total_p99_ms": percentile(total, 0.99),
            "gateway_cpu_per_stream_ms": gateway_cpu / max(run["calls"], 1) * 1000 if pid else None,
            "client_cpu_per_call_ms": client_cpu / max(run["calls"], 1) * 1000,
        }
        rows.append(row)
        print(
            f"{name:8} C={concurrency:<3} {row['calls_per_second']:7.1f} calls/s  "
            f"TTFT p50 {row['ttft_p50_ms']:7.2f} p99 {row['ttft_p99_ms']:7.2f} ms  "
            f"end p50 {row['total_p50_ms']:7.2f} ms  "
            + (f"gateway CPU {row['gateway_cpu_per_stream_ms']:.2f} ms/stream  " if pid else "")
            + f"client CPU {row['client_cpu_per_call_ms']:.2f} ms/call  errors {row['errors']}",
            flush=True,
        )
    return rows


async def run(
    levels: list[int], seconds: float, litellm: bool, direct: bool
) -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    upstream_port = free_port()
    upstream = start_upstream(upstream_port)
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    procs: list[subprocess.Popen[bytes]] = [upstream]
    rows: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=max(levels) + 8, max_keepalive_connections=max(levels))
    try:
        with bench_redis() as redis:
            async with (
                otlp_receiver() as (otlp, _received),
                httpx.AsyncClient(timeout=60, limits=limits) as client,
            ):
                await wait_until(lambda: _listening(client, upstream_url), upstream)
                if direct:
                    direct_url = f"{upstream_url}/v1"
                    rows += await measure(
                        "direct",
                        lambda: stream_openai_timed(client, direct_url, "bench-key"),
                        None,
                        levels,
                        seconds,
                    )
                name, _, _ = FULL
                router, channel, _, _ = await start_router(workdir, name, upstream_url, redis, otlp)
                procs.append(router)
                stub = router_pb2_grpc.RouterStub(channel)
                rows += await measure(name, lambda: route_timed(stub), router.pid, levels, seconds)
                await channel.close()
                router.terminate()
                router.wait(timeout=30)
                if litellm:
                    proxy, url, _ = await start_litellm(workdir, upstream_url)
                    procs.append(proxy)
                    rows += await measure(
                        "litellm",
                        lambda: stream_openai_timed(client, url, LITELLM_KEY),
                        proxy.pid,
                        levels,
                        seconds,
                    )
    finally:
        stop(procs)
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LiteLLM against the router at each concurrency: throughput, TTFT and CPU."""
    ours = {r["concurrency"]: r for r in rows if r["gateway"] == "router"}
    out = []
    for theirs in (r for r in rows if r["gateway"] == "litellm"):
        mine = ours.get(theirs["concurrency"])
        if mine is None:
            continue
        out.append(
            {
                "concurrency": theirs["concurrency"],
                "router_over_litellm_calls_per_second": mine["calls_per_second"]
                / max(theirs["calls_per_second"], 1e-9),
                "litellm_over_router_ttft_p50": theirs["ttft_p50_ms"] / mine["ttft_p50_ms"],
                "litellm_over_router_ttft_p99": theirs["ttft_p99_ms"] / mine["ttft_p99_ms"],
                "litellm_over_router_cpu_per_stream": theirs["gateway_cpu_per_stream_ms"]
                / mine["gateway_cpu_per_stream_ms"],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 8, 32, 64],
        help="the numbers of concurrent clients, one level after the other",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per level")
    parser.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy")
    parser.add_argument(
        "--direct", action="store_true", help="also stream from the upstream directly (floor)"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = asyncio.run(run(args.concurrency, args.seconds, args.litellm, args.direct))
    report = {
        "benchmark": "load",
        "seconds_per_level": args.seconds,
        "tokens_per_answer": TOKENS,
        "litellm_version": LITELLM_VERSION if args.litellm else None,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1min_before": load_before,
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        "levels": rows,
        "ratios": ratios(rows),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    for ratio in report["ratios"]:
        print(
            f"C={ratio['concurrency']:<3} router/LiteLLM throughput "
            f"x{ratio['router_over_litellm_calls_per_second']:.1f}; LiteLLM/router TTFT p50 "
            f"x{ratio['litellm_over_router_ttft_p50']:.1f}, p99 "
            f"x{ratio['litellm_over_router_ttft_p99']:.1f}, CPU per stream "
            f"x{ratio['litellm_over_router_cpu_per_stream']:.1f}"
        )
    print(f"wrote {RESULTS / 'load.json'}")


if __name__ == "__main__":
    main()
