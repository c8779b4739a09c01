"""Where a routed call's time goes before its first token: a timeline of one call at a time.

The router runs with every feature on, as in `bench_gateway` (Redis, the classifier, OTLP
export, the call log), under `benchmarks/timeline_router.py`, which timestamps the steps of each
`Route` call with the clock the client reads too (`perf_counter`, system-wide on Linux). The
client sends one call at a time to it (a fast mock upstream streaming 50 tokens) and notes when
it sent the request and when the first delta arrived; each step's offset from the send is then
summarised over the calls (p50, p90). Run:

    .venv/bin/python -m benchmarks.bench_timeline [--calls 400]

Results: benchmarks/results/timeline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_gateway import (
    RESULTS,
    ROOT,
    _listening,
    bench_redis,
    percentile,
    start_router,
    start_upstream,
    timed_route,
    wait_until,
)
from router_service._proto import router_pb2_grpc
from tests.support.otlp_receiver import otlp_receiver
from tests.support.redis_server import free_port

# The router's marks (see `timeline_router`) and the client's own, in the order of a call.
STEPS = (
    "handler",
    "authenticate",
    "validate",
    "prepare",
    "admit",
    "plan",
    "classify_start",
    "embedded",
    "classify_end",
    "hold_wait",
    "held",
    "decision_message",
    "producer_run",
    "endpoint_post",
    "decision_written",
    "upstream_request",
    "upstream_bytes",
    "first_batch",
    "client_first_delta",
    "end",
    "client_done",
)


async def one_call(stub: router_pb2_grpc.RouterStub) -> dict[str, float]:
    sent, first, done = await timed_route(stub)
    return {"sent": sent, "client_first_delta": first, "client_done": done}


async def run(calls: int, warmup: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-timeline-"))
    marks_path = workdir / "marks.jsonl"
    upstream_port = free_port()
    upstream = start_upstream(upstream_port)
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    router = None
    os.environ["PYTHONPATH"] = str(ROOT)  # the launcher lives in `benchmarks`
    try:
        with bench_redis() as redis:
            async with otlp_receiver() as (otlp, _), httpx.AsyncClient() as client:
                await wait_until(lambda: _listening(client, upstream_url), upstream)
                router, channel, _, _ = await start_router(
                    workdir,
                    "router",
                    upstream_url,
                    redis,
                    otlp,
                    launcher=("-m", "benchmarks.timeline_router", str(marks_path)),
                )
                stub = router_pb2_grpc.RouterStub(channel)
                for _ in range(warmup):
                    await one_call(stub)
                marks_path.unlink(missing_ok=True)
                client_marks = []
                for _ in range(calls):
                    client_marks.append(await one_call(stub))
                    await asyncio.sleep(0.002)  # let the last call's background work finish
                await channel.close()
        router_marks = [json.loads(line) for line in marks_path.read_text().splitlines()]
    finally:
        for proc in (upstream, router):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    offsets: dict[str, list[float]] = {step: [] for step in STEPS}
    for ours, theirs in zip(client_marks, router_marks, strict=True):
        for step, at in {**theirs, **ours}.items():
            if step in offsets:
                offsets[step].append((at - ours["sent"]) * 1000)
    return {
        step: {
            "calls": len(values),
            "p50_ms": statistics.median(values),
            "p90_ms": percentile(values, 0.90),
        }
        for step, values in offsets.items()
        if values
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    steps = asyncio.run(run(args.calls, args.warmup))
    report = {
        "benchmark": "timeline",
        "calls": args.calls,
        "method": "one call at a time, every feature on; offsets from the client's send",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "steps": steps,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "timeline.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'step':20} {'p50 ms':>8} {'p90 ms':>8}")
    for step, figures in steps.items():
        print(f"{step:20} {figures['p50_ms']:8.3f} {figures['p90_ms']:8.3f}")


if __name__ == "__main__":
    main()
