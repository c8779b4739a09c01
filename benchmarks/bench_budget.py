"""Budget reserve + settle latency: what exact budgets add to each call.

Runs sequential reserve-then-settle pairs through `BudgetLedger` (the code the pipeline calls)
against a local Redis (REDIS_URL, else 127.0.0.1:6379) and against the in-process store, in one
run, and prints p50/p99 per pair and the ratio. Target: p99 <= 0.5 ms against local Redis.
Also a call's whole store work both ways: as four scripts (rate-limit take, reserve, settle,
output tokens) and as the request path sends it, two (admission; settle with the charge).
Keys live under a fresh prefix and are deleted afterwards.

    .venv/bin/python -m benchmarks.bench_budget [--pairs 5000]
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
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

from redis.asyncio import BlockingConnectionPool, Redis

from router_service.auth import App
from router_service.budgets import BudgetLedger, period_of
from router_service.config import AppConfig, BudgetConfig
from router_service.store import (
    BudgetLimit,
    HoldRequest,
    MemoryStore,
    RateTake,
    RedisStore,
    Store,
    TokenCharge,
)
from router_service.store.resp import RespConnection

RESULTS = Path(__file__).parent / "results" / "bench_budget.json"
APP = App(
    name="bench",
    config=AppConfig(
        key_sha256="0" * 64, budget=BudgetConfig(monthly_limit_usd=Decimal("1000000"))
    ),
    tasks={},
)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 0.50), 4),
        "p99_ms": round(percentile(samples, 0.99), 4),
        "mean_ms": round(statistics.fmean(samples), 4),
    }


def machine_floor(url: str) -> dict[str, float] | None:
    """One PING from C (`redis-benchmark`, one client): what this machine's loopback and Redis
    cost before any Python; None when the tool is not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    parsed = urlparse(url)
    out = subprocess.run(
        [binary, "-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 6379)]
        + ["-t", "ping", "-n", "20000", "-c", "1", "--csv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95..","p99..",...
    row = next(line for line in out.splitlines() if line.startswith('"PING_MBULK"'))
    fields = [float(v.strip('"')) for v in row.split(",")[1:]]
    return {"p50_ms": fields[3], "p99_ms": fields[5], "mean_ms": fields[1]}


# A variant: one iteration; returns the seconds to count, or None to count the whole iteration.
Pair = Callable[[int], Awaitable[float | None]]


def ledger_pair(store: Store) -> Pair:
    ledger = BudgetLedger(store, lease_s=60)

    async def pair(_: int) -> None:
        hold = await ledger.reserve(APP, 20_000)
        await ledger.settle(hold, 7_000)

    return pair


def ledger_reserve(store: Store) -> Pair:
    """What a request waits for: the reservation. The settle runs after the answer has been
    sent, in the background, so it is made here but not timed."""
    ledger = BudgetLedger(store, lease_s=60)

    async def pair(_: int) -> float:
        started = time.perf_counter()
        hold = await ledger.reserve(APP, 20_000)
        elapsed = time.perf_counter() - started
        await ledger.settle(hold, 7_000)
        return elapsed

    return pair


def one_ping(client: Redis) -> Pair:
    async def pair(_: int) -> None:
        await client.ping()

    return pair


def store_pair(store: Store) -> Pair:
    period, limit = period_of(time.time()), BudgetLimit(10**12)

    async def pair(i: int) -> None:
        lease = str(i)
        await store.reserve(
            "bench", period, lease_id=lease, amount_micro_usd=20_000, lease_ms=60_000, default=limit
        )
        await store.settle("bench", period, lease_id=lease, actual_micro_usd=7_000, default=limit)

    return pair


def four_scripts(store: Store) -> Pair:
    """A call's store work as four scripts: rate-limit take, reserve, settle, output tokens."""
    period, limit = period_of(time.time()), BudgetLimit(10**12)
    limits = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12}

    async def pair(i: int) -> None:
        lease = str(i)
        await store.take("bench", **limits, requests=1, tokens=100)
        await store.reserve(
            "bench", period, lease_id=lease, amount_micro_usd=20_000, lease_ms=60_000, default=limit
        )
        await store.settle("bench", period, lease_id=lease, actual_micro_usd=7_000, default=limit)
        await store.take("bench", **limits, requests=0, tokens=300, force=True)

    return pair


def two_scripts(store: Store) -> Pair:
    """The same work as the request path sends it: admission, then settle with the charge."""
    period, limit = period_of(time.time()), BudgetLimit(10**12)
    take = RateTake(10**9, 10**12, 1, 100)
    charge = TokenCharge(tokens_per_minute=10**12, tokens=300)

    async def pair(i: int) -> None:
        lease = f"a{i}"
        await store.admit("bench", period, HoldRequest(lease, 20_000, 60_000, limit), take)
        await store.settle(
            "bench", period, lease_id=lease, actual_micro_usd=7_000, default=limit, charge=charge
        )

    return pair


def lean_pings(connection: RespConnection, count: int) -> Pair:
    """`count` PINGs over the lean connection the store's scripts use: their floor."""

    async def pair(_: int) -> None:
        for _ in range(count):
            await connection.execute("PING")

    return pair


def ping_pair(client: Redis) -> Pair:
    async def pair(_: int) -> None:
        await client.ping()
        await client.ping()

    return pair


async def measure(
    variants: dict[str, Pair], pairs: int, rounds: int = 10
) -> dict[str, list[float]]:
    """Interleaved rounds, so every variant sees the same machine noise."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    per_round = pairs // rounds
    for pair in variants.values():  # warm-up: connections, script cache
        for i in range(200):
            await pair(-i - 1)
    for r in range(rounds):
        for name, pair in variants.items():
            for i in range(per_round):
                started = time.perf_counter()
                counted = await pair(r * per_round + i)
                elapsed = time.perf_counter() - started if counted is None else counted
                samples[name].append(elapsed * 1000)
    return samples


async def measure_all(pairs: int) -> dict[str, object]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = Redis.from_pool(BlockingConnectionPool.from_url(url, max_connections=64, timeout=1))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    redis_store = RedisStore(client, key_prefix=prefix)
    lean = RespConnection.for_client(client)
    assert lean is not None
    try:
        samples = await measure(
            {
                "two PINGs, lean connection (floor)": lean_pings(lean, 2),
                "two PINGs, redis-py": ping_pair(client),
                "RedisStore reserve+settle": store_pair(redis_store),
                "BudgetLedger on Redis": ledger_pair(redis_store),
                "BudgetLedger in-process": ledger_pair(MemoryStore()),
                "one PING, lean connection (floor)": lean_pings(lean, 1),
                "one PING, redis-py": one_ping(client),
                "reserve alone (request path)": ledger_reserve(redis_store),
                "take+reserve+settle+charge (4 scripts)": four_scripts(redis_store),
                "admit+settle/charge (2 scripts)": two_scripts(redis_store),
            },
            pairs,
        )
    finally:
        await lean.aclose()
        await redis_store.aclose()
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    results = {name: summary(values) for name, values in samples.items()}
    floor_c = machine_floor(url)
    if floor_c is not None:
        results["one PING from C (redis-benchmark)"] = floor_c
    floor = results["two PINGs, lean connection (floor)"]
    ledger = results["BudgetLedger on Redis"]
    return {
        "method": f"{pairs} sequential pairs per variant in 10 interleaved rounds after 200 "
        "warm-up pairs; one asyncio loop; the store's scripts over its lean pipelined connection "
        "(hiredis parser), redis-py with hiredis for comparison; Redis 7 on loopback",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the start",
        "results": results,
        "ledger_over_floor_p50": round(ledger["p50_ms"] / floor["p50_ms"], 2),
        "ledger_over_floor_p99": round(ledger["p99_ms"] / floor["p99_ms"], 2),
        "target_p99_ms": 0.5,
        "meets_target": ledger["p99_ms"] <= 0.5,
        # What a request waits for (the settle runs after the answer, off the request path).
        "request_path_p50_ms": results["reserve alone (request path)"]["p50_ms"],
        "request_path_p99_ms": results["reserve alone (request path)"]["p99_ms"],
        "request_path_over_one_ping_p99": round(
            results["reserve alone (request path)"]["p99_ms"]
            / results["one PING, lean connection (floor)"]["p99_ms"],
            2,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5000)
    result = asyncio.run(measure_all(parser.parse_args().pairs))
    print(result["machine"])
    print(f"{'variant':<36} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    results = result["results"]
    assert isinstance(results, dict)
    for name, r in results.items():
        print(f"{name:<36} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['mean_ms']:>8}")
    print(
        f"ledger / two-PING floor: p50 {result['ledger_over_floor_p50']}x, "
        f"p99 {result['ledger_over_floor_p99']}x; target p99 <= 0.5 ms: "
        f"{'met' if result['meets_target'] else 'NOT met'}"
    )
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
