"""Two or more versions of the router side by side in one run: an A/B measurement of a change
(docs/BENCHMARKS.md).

Each version is a git revision (exported with `git archive` into a temporary directory, with
this checkout's generated protobuf code copied in) or `.` for the working tree. Every version
runs as `llm-router serve` with every feature on, as in `bench_gateway` (Redis, the classifier,
OTLP export, the call log), against one mock upstream whose first token comes after
`--upstream-ttft-ms` (0: a fast upstream on loopback; 20: a distant provider, roughly). Calls
go one at a time, one per version in turn, the order reversed every round, so the machine's
noise hits every version alike. Figures per version: client-side time to first token (p50,
p90, p99) and the router process's CPU per stream; the first version is the reference the
others are compared with (difference at p50, ratio of CPU). Run:

    .venv/bin/python -m benchmarks.bench_ab [REVISION ...] [--upstream-ttft-ms 0] [--calls 600]

(without revisions: HEAD against the working tree, as `make bench` runs it).

Results: benchmarks/results/ab-upstream-<ttft>ms.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import tarfile
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.bench_gateway import (
    RESULTS,
    ROOT,
    Arm,
    bench_redis,
    cpu_seconds,
    percentile,
    start_router,
    start_upstream,
    stream_router,
)
from router_service._proto import router_pb2_grpc
from tests.support.otlp_receiver import otlp_receiver
from tests.support.redis_server import free_port

GENERATED = Path("router_service") / "_proto"


def export(revision: str, into: Path) -> Path:
    """The tree of `revision` (`.`: this checkout), with this checkout's generated code."""
    if revision == ".":
        return ROOT
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision], cwd=ROOT, check=True, capture_output=True
    ).stdout
    tree = into / revision.replace("/", "_")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    shutil.copytree(ROOT / GENERATED, tree / GENERATED, dirs_exist_ok=True)
    return tree


async def run(revisions: list[str], upstream_ttft_ms: float, calls: int, warmup: int) -> list[Arm]:
    """One arm per revision, each a router of its own tree; their TTFTs and CPU."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    port = free_port()
    upstream = start_upstream(port, upstream_ttft_ms)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        arms = []
        async with otlp_receiver() as (otlp, _):
            with bench_redis() as redis:
                for revision in revisions:
                    proc, channel, _, _ = await start_router(
                        workdir,
                        f"router {len(procs)}",
                        f"http://127.0.0.1:{port}",
                        redis,
                        otlp,
                        extra_env={"PYTHONPATH": str(export(revision, workdir))},
                    )
                    procs.append(proc)
                    stub = router_pb2_grpc.RouterStub(channel)
                    arms.append(Arm(revision, partial(stream_router, stub), pid=proc.pid))
                for _ in range(warmup):
                    for arm in arms:
                        await arm.call()
                started = [cpu_seconds(proc.pid) for proc in procs]
                for i in range(calls):
                    for arm in arms if i % 2 == 0 else arms[::-1]:
                        await arm.once()
                for arm, proc, cpu in zip(arms, procs, started, strict=True):
                    arm.cpu_s = cpu_seconds(proc.pid) - cpu
        return arms
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        upstream.terminate()
        upstream.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def commit(revision: str) -> str:
    """The commit `revision` names (`.`: HEAD's, marked as the working tree), for the record:
    a results file naming only "HEAD" would mean another commit tomorrow."""
    name = "HEAD" if revision == "." else revision
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", name], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    return sha.strip() + (" + working tree" if revision == "." else "")


def summarize(arm: Arm, reference: Arm, calls: int) -> dict[str, Any]:
    ttft = arm.ttft_ms
    out: dict[str, Any] = {
        "commit": commit(arm.name),
        "ttft_p50_ms": statistics.median(ttft),
        "ttft_p90_ms": percentile(ttft, 0.9),
        "ttft_p99_ms": percentile(ttft, 0.99),
        "cpu_ms_per_stream": arm.cpu_s / calls * 1000,
    }
    if arm is not reference:
        out["ttft_p50_minus_reference_ms"] = out["ttft_p50_ms"] - statistics.median(
            reference.ttft_ms
        )
        out["cpu_ratio_to_reference"] = arm.cpu_s / reference.cpu_s
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "revisions",
        nargs="*",
        default=["HEAD", "."],
        help="git revisions, or . for the working tree (default: HEAD and the working tree)",
    )
    parser.add_argument("--upstream-ttft-ms", type=float, default=0.0)
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    arms = asyncio.run(run(args.revisions, args.upstream_ttft_ms, args.calls, args.warmup))
    reference = arms[0]
    report = {
        "benchmark": "ab",
        "upstream_ttft_ms": args.upstream_ttft_ms,
        "calls": args.calls,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "versions": {arm.name: summarize(arm, reference, args.calls) for arm in arms},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ab-upstream-{args.upstream_ttft_ms:g}ms.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )
    print(f"upstream first token after {args.upstream_ttft_ms:g} ms, {args.calls} calls each")
    header = f"{'version':24} {'TTFT p50':>9} {'p90':>7} {'p99':>7} {'CPU/stream':>11}"
    print(f"{header}  vs {reference.name}")
    for name, figures in report["versions"].items():
        versus = ""
        if "cpu_ratio_to_reference" in figures:
            versus = (
                f"{figures['ttft_p50_minus_reference_ms']:+.3f} ms, "
                f"CPU x{figures['cpu_ratio_to_reference']:.3f}"
            )
        print(
            f"{name:24} {figures['ttft_p50_ms']:9.3f} {figures['ttft_p90_ms']:7.3f} "
            f"{figures['ttft_p99_ms']:7.3f} {figures['cpu_ms_per_stream']:9.2f} ms  {versus}"
        )


if __name__ == "__main__":
    main()
