"""The gateway's own cost on a streamed call, with every feature on, beside direct calls and
(with --litellm) LiteLLM's proxy, in one run.

A fast mock upstream (tests/support/fake_provider.py, its own process) streams a 50-token answer
at once. Each round sends one request per arm, in turn, so machine noise hits every arm alike:

- direct:   httpx streams the upstream's answer itself (what an app without a gateway does);
- router:   `llm-router serve` (its own process) with everything on: Redis store (budgets, rate
            limits, stats, prefix warmth), the shipped classifier, OpenTelemetry traces and
            metrics exported over OTLP/gRPC to a receiver, the call log to a Redis Stream, 5%
            exploration; called over gRPC `Route`;
- grpc floor: `benchmarks/echo_router.py`, a Route that streams a fixed answer at once with no
            upstream: what the gRPC hop alone costs in Python on this machine;
- ablations (--ablations): the router with fewer features, to show what each costs: `bare`
            (in-process store, no telemetry, call log to files), `+redis`, `+otel`;
- litellm:  LiteLLM's proxy (its own process and virtualenv, installed on first use under
            .bench/), called over its OpenAI-compatible HTTP API.

Figures per arm: time to first token (client side, p50/p99), what each gateway adds to it
(arm minus direct, p50 and p99), CPU per stream of the gateway process (/proc), resident memory
after the run, and start-up time to ready. Run:

    .venv/bin/python -m benchmarks.bench_gateway [--rounds 500] [--litellm]

Results: benchmarks/results/gateway.json.
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
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis import asyncio as aioredis

from router_service._proto import router_pb2 as pb
from router_service._proto import router_pb2_grpc
from tests.support.otlp_receiver import otlp_receiver
from tests.support.redis_server import free_port, redis_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BENCH_DIR = ROOT / ".bench"
LITELLM_VERSION = "1.108.7"
LITELLM_KEY = "sk-bench-0123456789abcdef"
TOKENS = 50
PROMPT = "Summarize the attached incident report in three bullet points for the on-call channel."


# A channel made before its server listens retries on gRPC's reconnect backoff (1 s at first,
# growing): left at the defaults, start-up figures would measure that backoff, not the server.
_PROBE_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 50),
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    values = {line.split(":")[0]: line.split()[1] for line in status if line.startswith("Vm")}
    return {"rss_mb": int(values["VmRSS"]) / 1024, "peak_rss_mb": int(values["VmHWM"]) / 1024}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Arm:
    name: str
    call: Callable[[], Awaitable[float]]
    pid: int | None = None
    startup_s: float | None = None
    config: Path | None = None  # a router's config, to read its call log back
    # The same measures with this arm run alone (--alone): nothing else active but its
    # upstream, Redis and the receiver.
    alone_ttft_ms: list[float] = field(default_factory=list)
    alone_cpu_s: float = 0.0
    ttft_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    # CPU of this benchmark process spent in this arm's client: for `direct`, what merely
    # reading the upstream's stream with httpx costs, the floor any gateway pays too.
    client_cpu_s: float = 0.0

    async def once(self) -> None:
        cpu = time.process_time()
        self.ttft_ms.append(await self.call() * 1000)
        self.client_cpu_s += time.process_time() - cpu


async def wait_until(check: Callable[[], Awaitable[bool]], proc: subprocess.Popen[bytes]) -> float:
    """Seconds from now until `check` passes (the process was just started)."""
    started = time.perf_counter()
    while time.perf_counter() - started < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if await check():
                return time.perf_counter() - started
        except Exception:  # not up yet
            pass
        await asyncio.sleep(0.01)
    raise RuntimeError(f"{proc.args!r} did not become ready")


def start_upstream(port: int, ttft_ms: float = 0.0) -> subprocess.Popen[bytes]:
    """The mock upstream; `ttft_ms` delays each answer's first token (a distant provider)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_provider", "--port", str(port)]
        + ["--tokens", str(TOKENS), "--ttft-ms", str(ttft_ms)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# Router variants: (name, uses Redis, exports telemetry).
FULL = ("router", True, True)
ABLATIONS = (
    ("router bare", False, False),
    ("router +redis", True, False),
    ("router +otel", False, True),
)


# The key prefixes (store and call-log stream) the routers of this process were given, and the
# routers.
_PREFIXES: list[str] = []
_ROUTERS: list[subprocess.Popen[bytes]] = []


def _prefix() -> str:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    _PREFIXES.append(prefix)
    return prefix


@contextmanager
def bench_redis() -> Iterator[str]:
    """A Redis for the routers (as the tests find one), from which the keys the benchmark's
    routers wrote are deleted at the end, once the routers are stopped (they write until then):
    a shared Redis keeps nothing of a benchmark."""
    with redis_url() as url:
        try:
            yield url
        finally:
            for proc in _ROUTERS:
                proc.terminate()
            while _ROUTERS:
                proc = _ROUTERS.pop()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            _forget(url)


def _forget(url: str) -> None:
    """Delete the keys of every prefix handed out; a Redis error is reported, not raised (it
    would hide the benchmark's own)."""
    client = redis.Redis.from_url(url)
    try:
        while _PREFIXES:
            keys = list(client.scan_iter(match=f"{_PREFIXES.pop()}*", count=1000))
            for start in range(0, len(keys), 1000):
                client.unlink(*keys[start : start + 1000])
    except redis.RedisError as exc:
        print(f"could not delete the benchmark's Redis keys: {exc}", file=sys.stderr)
    finally:
        client.close()


def router_config(workdir: Path, name: str, redis: str | None) -> Path:
    raw = yaml.safe_load((ROOT / "config/examples/openai-compatible.yaml").read_text())
    if redis is None:
        raw["store"] = {"backend": "memory"}
    else:
        raw["store"] = {"backend": "redis", "redis_url": redis, "key_prefix": _prefix()}
    raw["apps"]["demo"]["budget"] = {"monthly_limit_usd": 1_000_000}
    raw["apps"]["demo"]["rate_limits"] = {
        "requests_per_minute": 1_000_000,
        "tokens_per_minute": 1_000_000_000,
    }
    raw["exploration"] = {"rate": 0.05, "shadow_rate": 0.0}
    slug = name.replace(" ", "-").replace("+", "")
    # Each arm logs its calls apart (a Redis Stream with Redis, else files), so that the
    # gateway's own measure of its overhead can be read back per arm.
    raw["call_log"] = {
        "directory": str(workdir / f"{slug}-calllog"),
        "stream": f"{_prefix()}:calllog",
    }
    path = workdir / (slug + ".yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


async def start_router(
    workdir: Path,
    name: str,
    upstream: str,
    redis: str | None,
    otlp: str | None,
    *,
    launcher: Sequence[str] = ("-m", "router_service"),
    extra_env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], aio.Channel, float, Path]:
    """`llm-router serve` (or what `launcher` runs with the same arguments) with every feature
    `redis` and `otlp` allow, and `extra_env` in its environment; returns the process, a channel
    to it, its start-up time to SERVING and its config."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "REDIS_URL"}
    env.update(
        OPENAI_BASE_URL=f"{upstream}/v1",
        OPENAI_API_KEY="bench-key",
        OTEL_SERVICE_NAME="llm-router-bench",
    )
    if otlp is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    env.update(extra_env or {})
    config = router_config(workdir, name, redis)
    proc = subprocess.Popen(
        [sys.executable, *launcher, "serve", "--config", str(config)]
        + ["--listen", f"127.0.0.1:{port}", "--log-level", "WARNING"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(config.with_suffix(".log"), "wb"),  # noqa: SIM115 - lives with the process
    )
    _ROUTERS.append(proc)
    channel = aio.insecure_channel(f"127.0.0.1:{port}", options=_PROBE_OPTIONS)
    health = health_pb2_grpc.HealthStub(channel)

    async def serving() -> bool:
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="router.v1.Router"), timeout=1
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return proc, channel, await wait_until(serving, proc), config


async def logged_overheads(config: Path, redis: str | None, last: int) -> list[float]:
    """The `overhead_ms` of a router's last `last` calls, as its own call log recorded them:
    arrival to the first upstream request plus first upstream chunk to its hand-off to gRPC,
    timed inside the process (what the client-side figure adds to it is the gRPC hop and the
    scheduling of four processes on two cores)."""
    log = yaml.safe_load(config.read_text())["call_log"]
    if redis is not None:
        client = aioredis.from_url(redis)
        try:
            entries = await client.xrevrange(log["stream"], count=last)
        finally:
            await client.aclose()
        lines = [fields[b"e"] for _, fields in reversed(entries)]
    else:
        lines = [
            line
            for path in sorted(Path(log["directory"]).glob("*.jsonl"))
            for line in path.read_bytes().splitlines()
        ][-last:]
    records = [json.loads(line) for line in lines]
    return [r["overhead_ms"] for r in records if r.get("kind") == "call" and r.get("overhead_ms")]


async def self_timed(
    arms: list[Arm], results: dict[str, Any], redis: str, rounds: int, prefix: str
) -> None:
    """Each router arm's own timing of its last `rounds` calls, into its results."""
    for arm in arms:
        if arm.config is None:
            continue
        uses_redis = "redis_url" in yaml.safe_load(arm.config.read_text())["store"]
        logged = await logged_overheads(arm.config, redis if uses_redis else None, rounds)
        out = results[arm.name]
        out[f"{prefix}inprocess_overhead_calls"] = len(logged)
        out[f"{prefix}inprocess_overhead_p50_ms"] = statistics.median(logged)
        out[f"{prefix}inprocess_overhead_p99_ms"] = percentile(logged, 0.99)


def litellm_python() -> Path:
    venv = BENCH_DIR / "litellm-venv"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "litellm").exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
            check=True,
        )
    return venv / "bin" / "litellm"


async def start_echo(workdir: Path) -> tuple[subprocess.Popen[bytes], aio.Channel]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.echo_router", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    channel = aio.insecure_channel(f"127.0.0.1:{port}", options=_PROBE_OPTIONS)

    async def ready() -> bool:
        await asyncio.wait_for(channel.channel_ready(), timeout=1)
        return True

    await wait_until(ready, proc)
    return proc, channel


async def start_litellm(workdir: Path, upstream: str) -> tuple[subprocess.Popen[bytes], str, float]:
    binary = litellm_python()
    port = free_port()
    config = {
        "model_list": [
            {
                "model_name": "glm-5.2",
                "litellm_params": {
                    "model": "openai/glm-5.2",
                    "api_base": f"{upstream}/v1",
                    "api_key": "bench-key",
                },
            }
        ],
        "litellm_settings": {"drop_params": True},
        # LiteLLM refuses to start without one; budgets and spend tracking would also need
        # its Postgres, which this comparison leaves out (it runs LiteLLM at its lightest).
        "general_settings": {"master_key": LITELLM_KEY},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [str(binary), "--config", str(path), "--port", str(port), "--host", "127.0.0.1"],
        cwd=workdir,
        env={**os.environ, "LITELLM_LOG": "ERROR"},
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "litellm.log", "wb"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{url}/health/readiness", timeout=1)).status_code == 200

    return proc, url, await wait_until(ready, proc)


async def stream_openai(client: httpx.AsyncClient, url: str, key: str) -> float:
    """Seconds to the first content token of a streamed chat completion."""
    first, _ = await stream_openai_timed(client, url, key)
    return first


async def stream_openai_timed(client: httpx.AsyncClient, url: str, key: str) -> tuple[float, float]:
    """A streamed chat completion: seconds to its first content token and to its end."""
    body = {
        "model": "glm-5.2",
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "max_tokens": 256,
    }
    started = time.perf_counter()
    first = 0.0
    async with client.stream(
        "POST", f"{url}/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not first and line.startswith("data: {") and '"content":"' in line.replace(" ", ""):
                first = time.perf_counter() - started
    return first, time.perf_counter() - started


async def timed_route(stub: router_pb2_grpc.RouterStub) -> tuple[float, float, float]:
    """One streamed `Route` call: when it was sent, when its first delta and its end arrived
    (`perf_counter`)."""
    request = pb.RouteRequest(
        task="summarization",
        messages=[pb.Message(role="user", content=PROMPT)],
        max_output_tokens=256,
    )
    sent = time.perf_counter()
    first = 0.0
    async for event in stub.Route(request, metadata=(("authorization", "Bearer demo-key"),)):
        kind = event.WhichOneof("event")
        if kind == "delta" and not first:
            first = time.perf_counter()
        elif kind == "done":
            assert event.done.usage.output_tokens == TOKENS, event.done
    return sent, first, time.perf_counter()


async def stream_router(stub: router_pb2_grpc.RouterStub) -> float:
    """A call's time to its first token."""
    sent, first, _ = await timed_route(stub)
    return first - sent


def summarize(arm: Arm, direct: Arm, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ttft_p50_ms": statistics.median(arm.ttft_ms),
        "ttft_p99_ms": percentile(arm.ttft_ms, 0.99),
    }
    if arm is not direct:
        out["added_ttft_p50_ms"] = out["ttft_p50_ms"] - statistics.median(direct.ttft_ms)
        out["added_ttft_p99_ms"] = out["ttft_p99_ms"] - percentile(direct.ttft_ms, 0.99)
    out["client_cpu_per_stream_ms"] = arm.client_cpu_s / rounds * 1000
    if arm.pid is not None:
        out["cpu_per_stream_ms"] = arm.cpu_s / rounds * 1000
        out.update(memory_mb(arm.pid))
    if arm.startup_s is not None:
        out["startup_to_ready_s"] = arm.startup_s
    return out


async def run_alone(arms: list[Arm], rounds: int) -> None:
    """Each arm on its own, one after the other: what a gateway costs when it has the machine
    to itself (a deployment runs it on its own cores), next to the interleaved figures."""
    for arm in arms:
        cpu = cpu_seconds(arm.pid) if arm.pid else 0.0
        for _ in range(rounds):
            arm.alone_ttft_ms.append(await arm.call() * 1000)
        await asyncio.sleep(2)  # background work of the last calls
        if arm.pid:
            arm.alone_cpu_s = cpu_seconds(arm.pid) - cpu


def summarize_alone(arm: Arm, direct: Arm, rounds: int) -> dict[str, float]:
    out = {
        "alone_ttft_p50_ms": statistics.median(arm.alone_ttft_ms),
        "alone_ttft_p99_ms": percentile(arm.alone_ttft_ms, 0.99),
    }
    if arm is not direct:
        out["alone_added_ttft_p50_ms"] = out["alone_ttft_p50_ms"] - statistics.median(
            direct.alone_ttft_ms
        )
        out["alone_added_ttft_p99_ms"] = out["alone_ttft_p99_ms"] - percentile(
            direct.alone_ttft_ms, 0.99
        )
    if arm.pid is not None:
        out["alone_cpu_per_stream_ms"] = arm.alone_cpu_s / rounds * 1000
    return out


async def run(
    rounds: int, warmup: int, with_litellm: bool, ablations: bool, alone: bool = False
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    upstream_port = free_port()
    upstream = start_upstream(upstream_port)
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    procs: list[subprocess.Popen[bytes]] = [upstream]
    try:
        with bench_redis() as redis:
            async with otlp_receiver() as (otlp, received), httpx.AsyncClient(timeout=30) as client:
                await wait_until(lambda: _listening(client, upstream_url), upstream)
                arms = [
                    Arm("direct", lambda: stream_openai(client, f"{upstream_url}/v1", "bench-key"))
                ]

                echo, echo_channel = await start_echo(workdir)
                procs.append(echo)
                echo_stub = router_pb2_grpc.RouterStub(echo_channel)
                arms.append(Arm("grpc floor", lambda: stream_router(echo_stub), echo.pid))
                channels = [echo_channel]
                for name, uses_redis, exports in (FULL, *(ABLATIONS if ablations else ())):
                    router, channel, startup, config = await start_router(
                        workdir,
                        name,
                        upstream_url,
                        redis if uses_redis else None,
                        otlp if exports else None,
                    )
                    procs.append(router)
                    channels.append(channel)
                    stub = router_pb2_grpc.RouterStub(channel)
                    arms.append(
                        Arm(
                            name,
                            lambda stub=stub: stream_router(stub),
                            router.pid,
                            startup,
                            config,
                        )
                    )
                if with_litellm:
                    litellm, litellm_url, lstart = await start_litellm(workdir, upstream_url)
                    procs.append(litellm)
                    arms.append(
                        Arm(
                            "litellm",
                            lambda: stream_openai(client, litellm_url, LITELLM_KEY),
                            litellm.pid,
                            lstart,
                        )
                    )
                for arm in arms:
                    for _ in range(warmup):
                        await arm.call()
                for arm in arms:
                    arm.cpu_s = -cpu_seconds(arm.pid) if arm.pid else 0.0
                for i in range(rounds):
                    for arm in arms[i % len(arms) :] + arms[: i % len(arms)]:
                        await arm.once()
                await asyncio.sleep(2)  # background work of the last calls (settles, exports)
                for arm in arms:
                    if arm.pid:
                        arm.cpu_s += cpu_seconds(arm.pid)
                results = {arm.name: summarize(arm, arms[0], rounds) for arm in arms}
                await self_timed(arms, results, redis, rounds, "")
                if alone:
                    await run_alone(arms, rounds)
                    for arm in arms:
                        results[arm.name].update(summarize_alone(arm, arms[0], rounds))
                    await self_timed(arms, results, redis, rounds, "alone_")
                for channel in channels:
                    await channel.close()
                results["router"]["otlp_spans_received"] = len(received.spans)
    finally:
        stop(procs)
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate every process, then wait for each (killing one that takes over 30 s)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _listening(client: httpx.AsyncClient, url: str) -> bool:
    try:
        await client.get(url, timeout=0.5)
    except httpx.TransportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy")
    parser.add_argument(
        "--alone",
        action="store_true",
        help="then also run each arm on its own (not interleaved) and report those figures",
    )
    parser.add_argument(
        "--ablations", action="store_true", help="also run the router with fewer features"
    )
    args = parser.parse_args()
    results = asyncio.run(
        run(args.rounds, args.warmup, args.litellm, args.ablations, alone=args.alone)
    )
    report = {
        "benchmark": "gateway",
        "rounds": args.rounds,
        "tokens_per_answer": TOKENS,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "arms": results,
    }
    if "litellm" in results:
        ours, theirs = results["router"], results["litellm"]
        report["litellm_over_router"] = {
            key: theirs[key] / ours[key]
            for key in (
                "added_ttft_p50_ms",
                "cpu_per_stream_ms",
                "rss_mb",
                "startup_to_ready_s",
                "alone_added_ttft_p50_ms",
                "alone_cpu_per_stream_ms",
            )
            if ours.get(key) and theirs.get(key) and ours[key] > 0
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(report, indent=2) + "\n")
    header = ("arm", "TTFT p50", "p99", "added p50", "p99", "CPU/stream", "RSS MB", "ready s")
    print(f"{header[0]:14}", *(f"{h:>10}" for h in header[1:]))
    for name, r in results.items():
        print(
            f"{name:14}",
            *(
                f"{r.get(key, 0):10.2f}"
                for key in (
                    "ttft_p50_ms",
                    "ttft_p99_ms",
                    "added_ttft_p50_ms",
                    "added_ttft_p99_ms",
                    "cpu_per_stream_ms",
                    "rss_mb",
                    "startup_to_ready_s",
                )
            ),
        )
    for name, r in results.items():
        if "alone_ttft_p50_ms" in r:
            print(
                f"{name} alone: TTFT p50 {r['alone_ttft_p50_ms']:.2f} ms"
                + (
                    f", added p50 {r['alone_added_ttft_p50_ms']:.2f} / p99 "
                    f"{r['alone_added_ttft_p99_ms']:.2f} ms"
                    if "alone_added_ttft_p50_ms" in r
                    else ""
                )
                + (
                    f", CPU {r['alone_cpu_per_stream_ms']:.2f} ms/stream"
                    if "alone_cpu_per_stream_ms" in r
                    else ""
                )
            )
    for name, r in results.items():
        for prefix, when in (("", ""), ("alone_", " (alone)")):
            if f"{prefix}inprocess_overhead_p50_ms" in r:
                print(
                    f"{name}{when}: overhead timed inside the gateway (call log, "
                    f"{r[f'{prefix}inprocess_overhead_calls']} calls): "
                    f"p50 {r[f'{prefix}inprocess_overhead_p50_ms']:.2f} ms, "
                    f"p99 {r[f'{prefix}inprocess_overhead_p99_ms']:.2f} ms"
                )
    if "litellm_over_router" in report:
        print(
            "LiteLLM / router:", {k: round(v, 1) for k, v in report["litellm_over_router"].items()}
        )


if __name__ == "__main__":
    main()
