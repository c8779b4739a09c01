"""Fault injection for the budget and the call log: are they exact when things break?

Runs 3 `llm-router serve` replicas against a `redis-server` of its own (on a free port, with
its append-only file, so a restart keeps the data, as a managed Redis does) and the fake
provider (`tests.support.fake_provider`, OpenAI and Anthropic SSE, in this process), with an
app budget small enough to be hit, and drives a few hundred concurrent `Route` calls with
random faults:

- clients: read to the end, cancel at once (before or around the decision), cancel when the
  decision arrives or after a few deltas, or give the call a short deadline;
- the provider: answers normally, reports cached input tokens, cuts the connection mid-stream,
  sends an error event mid-stream, stalls mid-stream or before the first token (the router's
  idle / first-token timeouts or the caller's deadline end it), answers 429 or 500 to the first
  attempt (a fallback), or 500 to every attempt (UNAVAILABLE);
- per scenario, one of: nothing more (`faults`); SIGKILL of a replica mid-stream (`sigkill`);
  SIGTERM of a replica mid-stream (`sigterm`, the drain); Redis killed and restarted mid-run
  with `fail_open` (`redis-restart-open`) and `fail_closed` (`redis-restart-closed`); Redis
  frozen (SIGSTOP) for longer than the store's operation timeout, then resumed, with
  `fail_open` and `fail_closed` (`redis-pause-open`, `redis-pause-closed`): replies lost after
  Redis ran the command; a replica frozen (SIGSTOP) for longer than its lease mid-stream, then
  resumed (`replica-pause`); one replica cut off from Redis (its traffic held by a proxy,
  then delivered) while the others go on, with `fail_open` and `fail_closed`
  (`partition-open`, `partition-closed`).

After each scenario's load, once the leases have run out and the log has stopped growing, the
replicas still alive are stopped with SIGTERM (as a rollout does: what they still have queued
is settled and written then), and the checks read what they left in Redis:

1. settled spend in Redis (raw and through Admin.GetBudget) equals the sum of the cost records'
   `cost_micro_usd` in the call log's stream for the app and month (the SIGKILL comes when
   only the victim has calls in flight, and after the log has taken its earlier ones: a
   replica killed with records still queued, up to `call_log.flush_interval_s` of them, takes
   them along while their spend is settled, a loss this check does not measure);
2. spend <= the hard limit (fail_open outages: each replica may spend up to the limit on its
   own while Redis is away; reported, bounded by replicas x limit);
3. nothing is reserved once no call is in flight and the leases (2 s here) have run out, and
   no hold ended by its lease running out (its `x:` marker) but those of the killed replica,
   whose holds must be gone one lease after the kill (and Redis outages, reported);
4. no replica crashed: exit codes (0 after SIGTERM) and no traceback in any replica's log;
5. every call the client saw complete (`done`) has exactly one cost record, of the same cost,
   every call the router answered otherwise (a refusal, an error) has one too (but those the
   killed replica had in flight), and no request id has two records.

Run (about 2-3 minutes for all seven scenarios; keep the machine otherwise quiet; everything
listens on loopback and stops by itself):

    .venv/bin/python -m benchmarks.fault_injection [--scenario NAME ...] [--calls 300] [--seed 1]

Results: benchmarks/results/fault-injection.json (one entry per scenario, with the numbers and
every failed check); exit status 1 when a check failed. The work directory it prints keeps, per
scenario, the replicas' logs, the log's records (`records.json`) and what each client saw
(`calls.json`); with `FAULT_MONITOR=1` also Redis's MONITOR output (`monitor.log`), to follow
one lease's scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from grpc import aio
from redis.asyncio import Redis

from router_service._proto import router_pb2 as pb
from router_service._proto import router_pb2_grpc
from router_service.budgets import period_of
from router_service.store import BudgetLimit, RedisStore
from tests.support import processes
from tests.support.configs import ADMIN_KEY, DEMO_KEY
from tests.support.fake_provider import FakeProvider
from tests.support.fake_wire import Received, Reply
from tests.support.processes import wait_serving
from tests.support.provider_configs import environ, mixed_raw
from tests.support.redis_server import free_port

RESULTS = Path(__file__).parent / "results" / "fault-injection.json"

APP = "demo"
LEASE_S = 2.0
OPERATION_TIMEOUT_S = 0.5
REPLICAS = 3
CONCURRENCY = 16
LIMIT_USD = 0.04
MAX_OUTPUT_TOKENS = 200
TOKEN_INTERVAL_S = 0.015

# What the fake provider does, by kind (weights of the random draw).
PROVIDER_FAULTS = {
    "ok": 44,
    "cached": 15,
    "cut": 8,
    "error_event": 7,
    "stall": 4,
    "slow_first": 3,
    "429_first": 4,
    "500_first": 8,
    "500_all": 3,
}
# What the client does.
CLIENT_BEHAVIOURS = {"full": 68, "cancel_early": 10, "cancel_mid": 14, "deadline": 8}

_DIRECTIVE = re.compile(r"<<F:([a-z0-9_]+):(\d+):([0-9a-f]+)>>")


# --- Redis of our own --------------------------------------------------------------------------


class OwnRedis:
    """A redis-server on a free port with an append-only file (fsync on every write), so that
    a kill and restart keeps what it had acknowledged."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `make setup` installs it")
        self._binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            client = Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=0.5)
            try:
                if await client.ping():
                    return
            except Exception:
                pass
            finally:
                await client.aclose()
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


class HoldingProxy:
    """A TCP proxy to Redis that can hold the traffic both ways (a network partition): what
    was sent meanwhile arrives when it is released, as TCP delivers it once a partition heals,
    so Redis may run commands whose caller has given up."""

    def __init__(self, redis_port: int) -> None:
        self.port = free_port()
        self._redis_port = redis_port
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self._redis_port
            )
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    await self._open.wait()
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                await self._open.wait()
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}

    async def stop(self) -> None:
        self._open.set()
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()


# --- the provider ------------------------------------------------------------------------------


class FaultyProvider(FakeProvider):
    """The fake provider, told what to do by a directive in the prompt: `<<F:kind:tokens:nonce>>`.
    Faults of kind `*_first` hit the first attempt of a request only (its fallback answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: Counter[str] = Counter()

    async def _receive(self, request: web.Request) -> tuple[Received, Reply]:
        received, _ = await super()._receive(request)
        match = _DIRECTIVE.search(json.dumps(received.body.get("messages", [])))
        if match is None:
            return received, Reply(tokens=10)
        kind, tokens, nonce = match.group(1), int(match.group(2)), match.group(3)
        self.attempts[nonce] += 1
        first = self.attempts[nonce] == 1
        paced = Reply(tokens=tokens, token_interval_s=TOKEN_INTERVAL_S)
        half = max(1, tokens // 2)
        replies = {
            "ok": paced,
            "cached": Reply(tokens=tokens, token_interval_s=TOKEN_INTERVAL_S, cached_tokens=40),
            "cut": Reply(tokens=tokens, token_interval_s=TOKEN_INTERVAL_S, cut_after_tokens=half),
            "error_event": Reply(
                tokens=tokens, token_interval_s=TOKEN_INTERVAL_S, error_event_after_tokens=half
            ),
            "stall": Reply(
                tokens=tokens, token_interval_s=TOKEN_INTERVAL_S, stall_after_tokens=half
            ),
            "slow_first": Reply(
                tokens=tokens, token_interval_s=TOKEN_INTERVAL_S, first_token_delay_s=3.0
            ),
            "429_first": Reply(status=429, retry_after="1") if first else paced,
            "500_first": Reply(status=500) if first else paced,
            "500_all": Reply(status=500),
            # Streams for about 3 s: in flight when a replica is killed or terminated.
            "long": Reply(tokens=150, token_interval_s=0.02),
        }
        return received, replies[kind]


# --- router replicas ---------------------------------------------------------------------------


@dataclass
class Replica:
    index: int
    log: Path
    base: processes.Replica
    channel: aio.Channel | None = None
    # "live", "killed" (SIGKILL), "terminated" (SIGTERM sent)
    state: str = "live"

    @property
    def target(self) -> str:
        return self.base.target

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.base.process

    @property
    def router(self) -> router_pb2_grpc.RouterStub:
        assert self.channel is not None
        return router_pb2_grpc.RouterStub(self.channel)

    @property
    def admin(self) -> router_pb2_grpc.AdminStub:
        assert self.channel is not None
        return router_pb2_grpc.AdminStub(self.channel)


def write_config(path: Path, redis_url: str, prefix: str, policy: str) -> None:
    raw = mixed_raw(
        server={"grace_period_s": 15, "drain_delay_s": 0},
        apps={
            APP: {
                "budget": {"monthly_limit_usd": 1000},
                # The admission script (rate limits and the hold together) is the production
                # path; limits too high to refuse anything here.
                "rate_limits": {"requests_per_minute": 100_000, "tokens_per_minute": 10**9},
            }
        },
        store={
            "backend": "redis",
            "redis_url": redis_url,
            "key_prefix": prefix,
            "on_unavailable": policy,
            "reservation_lease_s": LEASE_S,
            "operation_timeout_s": OPERATION_TIMEOUT_S,
        },
        circuit_breaker={"failures": 1000, "cool_down_s": 1, "max_retry_after_s": 1},
        exploration={"rate": 0.0, "shadow_rate": 0.0},
        classifier={"enabled": False},
        call_log={"enabled": True, "flush_interval_s": 0.2},
    )
    path.write_text(yaml.safe_dump(raw))


def start_replica(index: int, config: Path, workdir: Path, env: dict[str, str]) -> Replica:
    log = workdir / f"replica-{index}.log"
    # INFO: the repayment of spend counted locally during an outage is logged at INFO.
    base = processes.start_replica(config, log, env=env, cwd=workdir, log_level="INFO")
    return Replica(index, log, base)


# --- calls -------------------------------------------------------------------------------------


@dataclass
class CallResult:
    request_id: str
    replica: int
    tier: str
    fault: str
    behaviour: str
    started: float
    ended: float = 0.0
    # "done", a gRPC status name, or "cancelled" (by this client)
    outcome: str = ""
    cost_micro_usd: int = 0
    saw_decision: bool = False
    deltas: int = 0


FILLER = (
    "Summarize the attached incident review for the weekly operations digest: what failed, "
    "who noticed, how long customers were affected, which follow-ups are open and who owns "
    "each of them. Keep it short and factual. "
)


def make_request(rng: random.Random, request_id: str, fault: str, tier: str) -> pb.RouteRequest:
    tokens = rng.randint(10, 60)
    nonce = request_id.rsplit("-", 1)[-1]
    content = f"<<F:{fault}:{tokens}:{nonce}>> {FILLER}"
    return pb.RouteRequest(
        task="summarization",
        messages=[pb.Message(role="user", content=content)],
        max_output_tokens=MAX_OUTPUT_TOKENS,
        request_id=request_id,
        hints=pb.RouteHints(
            tier=pb.TIER_PREFERENCE_FRONTIER if tier == "frontier" else pb.TIER_PREFERENCE_CHEAP
        ),
    )


def _draw(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


async def one_call(
    rng: random.Random, replica: Replica, result: CallResult, request: pb.RouteRequest
) -> None:
    behaviour = result.behaviour
    metadata = (("authorization", f"Bearer {DEMO_KEY}"),)
    timeout = rng.uniform(0.3, 1.5) if behaviour == "deadline" else 30.0
    call = replica.router.Route(request, metadata=metadata, timeout=timeout)
    try:
        if behaviour == "cancel_early":
            await asyncio.sleep(rng.choice([0, 0, 0.001, 0.003, 0.006]))
            call.cancel()
            result.outcome = "cancelled"
            return
        # -1: cancelled as soon as the decision arrives, before any delta.
        stop_after = rng.randint(-1, 8) if behaviour == "cancel_mid" else None
        async for event in call:
            if event.HasField("decision"):
                result.saw_decision = True
                if stop_after == -1:
                    call.cancel()
                    result.outcome = "cancelled"
                    return
            elif event.HasField("delta"):
                result.deltas += 1
                if stop_after is not None and result.deltas > stop_after:
                    call.cancel()
                    result.outcome = "cancelled"
                    return
            elif event.HasField("done"):
                result.outcome = "done"
                result.cost_micro_usd = event.done.cost_micro_usd
        if not result.outcome:
            result.outcome = "no done"
    except aio.AioRpcError as exc:
        result.outcome = exc.code().name
    except asyncio.CancelledError:
        result.outcome = "cancelled"
    finally:
        result.ended = time.monotonic()


class Load:
    """Drives the calls; `started` counts them as they begin, for the scenario's timing."""

    def __init__(self, rng: random.Random, replicas: list[Replica], calls: int, tag: str) -> None:
        self.rng = rng
        self.replicas = replicas
        self.calls = calls
        self.tag = tag
        self.started = 0
        self.results: list[CallResult] = []
        self.in_flight: dict[str, CallResult] = {}
        # Cleared: no new random call starts (those already started go on).
        self.gate = asyncio.Event()
        self.gate.set()
        self._burst = 0

    async def run(self) -> None:
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with semaphore:
                await self.gate.wait()
                rng = self.rng
                live = [r for r in self.replicas if r.state == "live"]
                replica = rng.choice(live)
                request_id = f"{self.tag}-{i:05d}-{rng.getrandbits(40):010x}"
                fault = _draw(rng, PROVIDER_FAULTS)
                tier = "frontier" if rng.random() < 0.3 else "cheap"
                behaviour = _draw(rng, CLIENT_BEHAVIOURS)
                if fault in ("stall", "slow_first") and behaviour == "full" and rng.random() < 0.5:
                    behaviour = "deadline"
                result = CallResult(
                    request_id, replica.index, tier, fault, behaviour, time.monotonic()
                )
                self.results.append(result)
                self.started += 1
                self.in_flight[request_id] = result
                try:
                    request = make_request(rng, request_id, fault, tier)
                    await one_call(rng, replica, result, request)
                finally:
                    del self.in_flight[request_id]

        await asyncio.gather(*(one(i) for i in range(self.calls)))

    def burst(self, replica: Replica, count: int) -> list[asyncio.Task[None]]:
        """`count` calls to `replica` streaming for about 3 s each (read to the end)."""
        tasks = []
        for _ in range(count):
            self._burst += 1
            request_id = f"{self.tag}-burst{self._burst:02d}-{self.rng.getrandbits(40):010x}"
            result = CallResult(
                request_id, replica.index, "cheap", "long", "full", time.monotonic()
            )
            self.results.append(result)
            request = make_request(self.rng, request_id, "long", "cheap")
            tasks.append(asyncio.create_task(one_call(self.rng, replica, result, request)))
        return tasks

    async def streaming(self, timeout_s: float = 10) -> list[CallResult]:
        """The long calls streaming now, once each of them streams or has ended (the budget
        may refuse some)."""
        long = [r for r in self.results if r.fault == "long"]
        deadline = time.monotonic() + timeout_s
        while not all(r.deltas or r.outcome for r in long) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return [r for r in long if r.deltas and not r.outcome]

    async def quiet(self, timeout_s: float = 15) -> None:
        """Waits until no random call is in flight."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def reach(self, share: float) -> None:
        while self.started < share * self.calls:
            await asyncio.sleep(0.01)


# --- checks ------------------------------------------------------------------------------------


def period() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


async def budget_raw(client: Redis, prefix: str) -> dict[str, int]:
    raw = await client.hgetall(f"{prefix}:{{{APP}}}:budget:{period()}")
    return {
        "spent": int(raw.get(b"spent", 0)),
        "reserved": int(raw.get(b"reserved", 0)),
        "live_holds": sum(1 for k in raw if k.startswith(b"h:")),
        # Holds released because their lease ran out, never settled after (`x:` markers).
        "expired_holds": sum(1 for k in raw if k.startswith(b"x:")),
    }


async def admin_budget(replicas: list[Replica]) -> dict[str, float] | None:
    for replica in replicas:
        if replica.state != "live":
            continue
        try:
            reply = await replica.admin.GetBudget(
                pb.GetBudgetRequest(app_id=APP),
                metadata=(("authorization", f"Bearer {ADMIN_KEY}"),),
                timeout=5,
            )
        except aio.AioRpcError:
            continue
        return {
            "spent_micro_usd": round(reply.spent_usd * 1e6),
            "reserved_micro_usd": round(reply.reserved_usd * 1e6),
            "limit_usd": reply.monthly_limit_usd,
        }
    return None


async def call_log(client: Redis, prefix: str) -> list[dict[str, Any]]:
    records = []
    for _, fields in await client.xrange(f"{prefix}:calllog", "-", "+"):
        entry = json.loads(fields[b"e"])
        if entry.get("kind") == "call" and entry.get("app") == APP:
            records.append(entry)
    return records


async def settle_down_quick(client: Redis, prefix: str, timeout_s: float = 5) -> None:
    """Waits until nothing is reserved (the settles of the calls that just ended landed)."""
    deadline = time.monotonic() + timeout_s
    while (await budget_raw(client, prefix))["reserved"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def settle_down(client: Redis, prefix: str, replicas: list[Replica]) -> dict[str, Any]:
    """Waits for the leases to run out and the log to stop growing; the budget then."""
    await asyncio.sleep(LEASE_S + 0.5)
    deadline = time.monotonic() + 20
    last = -1
    budget = await budget_raw(client, prefix)
    while time.monotonic() < deadline:
        # A read through a replica runs the script that releases expired leases.
        await admin_budget(replicas)
        budget = await budget_raw(client, prefix)
        length = await client.xlen(f"{prefix}:calllog")
        if budget["reserved"] == 0 and length == last:
            break
        last = length
        await asyncio.sleep(0.5)
    return budget


async def stop_replicas(replicas: list[Replica]) -> None:
    for replica in replicas:
        if replica.channel is not None:
            await replica.channel.close()
            replica.channel = None
    for replica in replicas:
        if replica.process.poll() is None:
            replica.process.send_signal(signal.SIGTERM)
    for replica in replicas:
        try:
            await asyncio.to_thread(replica.process.wait, 30)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait(timeout=5)


async def final_budget(client: Redis, prefix: str) -> dict[str, int]:
    """The budget once every replica has stopped; the usage script first releases the holds
    whose leases ran out, as any replica's next call would."""
    store = RedisStore(client, key_prefix=prefix)
    try:
        await store.budget_usage(APP, period_of(time.time()), BudgetLimit(None))
    finally:
        await store.aclose()
    return await budget_raw(client, prefix)


def log_problems(replicas: list[Replica]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for replica in replicas:
        lines = replica.log.read_text(errors="replace").splitlines()
        bad = [
            line
            for line in lines
            if "Traceback" in line or " ERROR " in line or " CRITICAL " in line
        ]
        if bad:
            found[f"replica-{replica.index}"] = bad[:20]
    return found


@dataclass
class Outcome:
    scenario: str
    policy: str
    calls: int
    outcomes: dict[str, int]
    by_fault: dict[str, dict[str, int]]
    limit_micro_usd: int
    spent_micro_usd: int
    admin_spent_micro_usd: int | None
    log_records: int
    log_cost_micro_usd: int
    reserved_after_micro_usd: int
    live_holds_after: int
    client_done: int
    client_done_cost_micro_usd: int
    exit_codes: dict[str, int | None]
    events: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    log_errors: dict[str, list[str]] = field(default_factory=dict)


# --- scenarios ---------------------------------------------------------------------------------


async def run_scenario(name: str, calls: int, seed: int, workdir: Path) -> Outcome:
    policy = "fail_closed" if name.endswith("-closed") else "fail_open"
    rng = random.Random(f"{name}-{seed}")
    root = workdir / name
    root.mkdir(parents=True)
    redis = OwnRedis(root)
    await redis.start()
    monitor = None
    if os.environ.get("FAULT_MONITOR"):
        monitor = subprocess.Popen(
            ["redis-cli", "-p", str(redis.port), "monitor"],
            stdout=(root / "monitor.log").open("wb"),
        )
    fake = FaultyProvider()
    await fake.start()
    prefix = f"fault-{name}-{seed}"
    config = root / "router.yaml"
    write_config(config, redis.url, prefix, policy)
    # The last replica reaches Redis through a proxy that can hold its traffic (a partition).
    proxy = HoldingProxy(redis.port)
    await proxy.start()
    behind_proxy = root / "router-behind-proxy.yaml"
    write_config(behind_proxy, f"redis://127.0.0.1:{proxy.port}/0", prefix, policy)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(environ(fake.url))
    replicas = [
        start_replica(i, behind_proxy if i == REPLICAS - 1 else config, root, env)
        for i in range(REPLICAS)
    ]
    client = Redis.from_url(redis.url, socket_timeout=5)
    events: list[str] = []
    t0 = time.monotonic()

    def event(text: str) -> None:
        events.append(f"{time.monotonic() - t0:6.2f}s {text}")

    notes: dict[str, Any] = {}
    try:
        await wait_serving([r.target for r in replicas])
        for replica in replicas:
            replica.channel = aio.insecure_channel(replica.target)
        await replicas[0].admin.SetBudget(
            pb.SetBudgetRequest(app_id=APP, monthly_limit_usd=LIMIT_USD),
            metadata=(("authorization", f"Bearer {ADMIN_KEY}"),),
        )
        load = Load(rng, replicas, calls, name)
        victim = replicas[REPLICAS - 1]

        # When the paused replica was stopped and resumed (monotonic).
        paused: list[float] = []

        async def faults() -> None:
            if name in ("sigkill", "sigterm"):
                await load.reach(0.25)
                # The long calls start alone, so that the budget takes them (the calls in
                # flight may hold all of it); for SIGKILL they stay alone in flight, so that
                # what the victim holds is what Redis holds, and after the log has taken the
                # earlier calls' records (every 0.2 s): the killed replica then loses only
                # the calls it has in flight, which are neither settled nor logged.
                load.gate.clear()
                await load.quiet()
                await settle_down_quick(client, prefix)
                await asyncio.sleep(0.6)
                burst = load.burst(victim, 4)
                started = await load.streaming()
                if name == "sigterm":
                    load.gate.set()
                    await asyncio.sleep(0.3)  # random calls in flight on the victim too
                if len(started) < 2:
                    notes["not_exercised"] = f"only {len(started)} long streams on the victim"
                in_flight = [r for r in load.in_flight.values() if r.replica == victim.index]
                held = await budget_raw(client, prefix)
                notes["reserved_before_signal"] = held["reserved"]
                notes["victim_calls_in_flight"] = len(in_flight) + len(started)
                if name == "sigkill":
                    victim.state = "killed"
                    victim.process.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    event(
                        f"SIGKILL replica {victim.index}: {len(started)} long streams in flight, "
                        f"{held['reserved']} micro-USD reserved"
                    )
                    await asyncio.sleep(0.2)
                    notes["reserved_after_kill"] = (await budget_raw(client, prefix))["reserved"]
                    await asyncio.sleep(max(0.0, killed_at + LEASE_S + 0.2 - time.monotonic()))
                    await admin_budget(replicas)  # a read runs the release of expired leases
                    after = await budget_raw(client, prefix)
                    notes["reserved_after_lease"] = after["reserved"]
                    event(f"lease ({LEASE_S} s) over: {after['reserved']} micro-USD reserved")
                    if notes["reserved_after_kill"] == 0:
                        notes["kill_check"] = (
                            "nothing was held at the kill: the check proved nothing"
                        )
                    if after["reserved"] != 0:
                        notes["kill_check"] = "the killed replica's holds outlived their lease"
                    load.gate.set()
                else:
                    # The streams under way (their decision sent): the drain must finish them.
                    in_flight = [
                        r
                        for r in load.in_flight.values()
                        if r.replica == victim.index and r.saw_decision
                    ]
                    notes["in_flight_at_sigterm"] = [r.request_id for r in in_flight + started]
                    victim.state = "terminated"
                    victim.process.send_signal(signal.SIGTERM)
                    event(
                        f"SIGTERM replica {victim.index} with "
                        f"{len(notes['in_flight_at_sigterm'])} streams under way"
                    )
                await asyncio.gather(*burst)
            elif name == "replica-pause":
                await load.reach(0.25)
                load.gate.clear()
                await load.quiet()
                burst = load.burst(victim, 4)
                if not await load.streaming():
                    notes["not_exercised"] = "no long stream on the victim"
                load.gate.set()
                await asyncio.sleep(0.3)
                victim.process.send_signal(signal.SIGSTOP)
                paused.append(time.monotonic())
                event(f"SIGSTOP replica {victim.index} for {LEASE_S + 1.5} s (> its lease)")
                await asyncio.sleep(LEASE_S + 1.5)
                victim.process.send_signal(signal.SIGCONT)
                paused.append(time.monotonic())
                event(f"SIGCONT replica {victim.index}")
                await asyncio.gather(*burst)
            elif name.startswith("partition"):
                await load.reach(0.3)
                proxy.hold()
                event(f"replica {victim.index} cut off from Redis (its traffic held)")
                await asyncio.sleep(2.5)
                proxy.release()
                event(f"replica {victim.index} reaches Redis again (held traffic delivered)")
            elif name.startswith("redis-restart"):
                await load.reach(0.3)
                redis.kill()
                event("Redis SIGKILLed")
                await asyncio.sleep(1.5)
                await redis.start()
                event("Redis restarted (append-only file kept)")
            elif name.startswith("redis-pause"):
                await load.reach(0.3)
                redis.pause()
                event("Redis SIGSTOPped")
                await asyncio.sleep(2.5)
                redis.resume()
                event("Redis SIGCONTed")

        await asyncio.gather(load.run(), faults())
        event(f"load done: {calls} calls")
        await settle_down(client, prefix, replicas)
        event("leases expired, call log settled")
        admin = await admin_budget(replicas)
        raw = await budget_raw(client, prefix)
        notes["before_shutdown"] = {"spent": raw["spent"], "reserved": raw["reserved"]}
        # The replicas stop as on a rollout (SIGTERM: drain, settle what is queued, write the
        # log); the checks then read what they left.
        await stop_replicas(replicas)
        event("replicas stopped (SIGTERM)")
        budget = await final_budget(client, prefix)
        records = await call_log(client, prefix)
    finally:
        await stop_replicas(replicas)
        await client.aclose()
        await fake.stop()
        await proxy.stop()
        if monitor is not None:
            monitor.terminate()
        redis.stop()

    # For a closer look: the log's records and what each client saw.
    (root / "records.json").write_text(json.dumps(records, indent=0))
    (root / "calls.json").write_text(json.dumps([asdict(r) for r in load.results], indent=0))

    # --- the checks ---
    failures: list[str] = []
    results = load.results
    limit = round(LIMIT_USD * 1e6)
    spent = budget["spent"]
    log_cost = sum(int(r["cost_micro_usd"]) for r in records)
    per_id = Counter(r["request_id"] for r in records)
    duplicates = {rid: n for rid, n in per_id.items() if n > 1}
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_id.setdefault(record["request_id"], []).append(record)
    done = [r for r in results if r.outcome == "done"]

    # (1) spend equals the log.
    if spent != log_cost:
        failures.append(
            f"(1) spent {spent} != call-log sum {log_cost} (difference {spent - log_cost:+d})"
        )
    if admin is not None and admin["spent_micro_usd"] != notes["before_shutdown"]["spent"]:
        failures.append(
            f"(1) Admin.GetBudget spent {admin['spent_micro_usd']} != Redis's "
            f"{notes['before_shutdown']['spent']}"
        )
    # (2) the hard limit.
    outage_open = policy == "fail_open" and name.startswith(("redis-", "partition"))
    if spent > limit:
        if outage_open and spent <= REPLICAS * limit:
            notes["over_limit_during_fail_open_outage_micro_usd"] = spent - limit
        elif name == "replica-pause":
            # budgets.py: a replica stalled for a whole lease settles what its calls cost
            # after its holds were released and given to others (alerted as lease_lost).
            notes["over_limit_after_a_stalled_replica_micro_usd"] = spent - limit
        else:
            failures.append(f"(2) spent {spent} > limit {limit}")
    # Every hold is settled or given back by its replica, except those a dead replica held
    # (and, in a Redis outage, those whose renewals could not reach Redis for a lease).
    notes["holds_released_by_lease_expiry"] = budget["expired_holds"]
    expected_expired = notes.get("victim_calls_in_flight", 0) if name == "sigkill" else 0
    outage = name.startswith(("redis-", "partition"))
    if not outage and budget["expired_holds"] != expected_expired:
        failures.append(
            f"(3) {budget['expired_holds']} holds ended by their lease running out, expected "
            f"{expected_expired}"
        )
    if "not_exercised" in notes:
        failures.append(f"the scenario's fault did not happen as planned: {notes['not_exercised']}")
    if "kill_check" in notes:
        failures.append(f"(3) SIGKILL: {notes['kill_check']}")
    # (3) nothing left reserved.
    if budget["reserved"] != 0 or budget["live_holds"] != 0:
        failures.append(
            f"(3) reserved {budget['reserved']} micro-USD in {budget['live_holds']} holds "
            f"after the leases ran out"
        )
    # (4) no crash.
    exit_codes = {f"replica-{r.index}": r.process.returncode for r in replicas}
    for replica in replicas:
        code = replica.process.returncode
        expected = -signal.SIGKILL if replica.state == "killed" else 0
        if code != expected:
            failures.append(f"(4) replica {replica.index} exited {code}, expected {expected}")
    problems = log_problems(replicas)
    for where, lines in problems.items():
        if any("Traceback" in line for line in lines):
            failures.append(f"(4) traceback in {where}'s log")
        lost = [line for line in lines if "was never recorded" in line]
        if lost:
            failures.append(f"(1) {where} dropped {len(lost)} settles at shutdown")
    # (5) every completed call has exactly one record, of its cost.
    for result in done:
        found = by_id.get(result.request_id, [])
        if len(found) != 1:
            failures.append(f"(5) {result.request_id} ({result.fault}) done, {len(found)} records")
        elif int(found[0]["cost_micro_usd"]) != result.cost_micro_usd:
            failures.append(
                f"(5) {result.request_id}: done said {result.cost_micro_usd}, record says "
                f"{found[0]['cost_micro_usd']}"
            )
    # ... and every call the router answered (a status, not this client's cancellation) has
    # one, refusals included; but the calls the SIGKILLed replica had in flight.
    unrecorded = Counter(
        f"{r.outcome} from replica {r.replica}"
        for r in results
        if r.outcome not in ("done", "cancelled")
        and r.request_id not in by_id
        and not (name == "sigkill" and r.replica == victim.index and r.fault == "long")
        # Calls whose deadline passed while their replica was frozen: it never handled them.
        and not (
            name == "replica-pause"
            and r.replica == victim.index
            and r.outcome == "DEADLINE_EXCEEDED"
            and not r.saw_decision
            and len(paused) == 2
            and r.started < paused[1]
            and r.ended > paused[0]
        )
    )
    if unrecorded:
        failures.append(f"(5) calls answered without a cost record: {dict(unrecorded)}")
    if duplicates:
        failures.append(
            f"(5) {len(duplicates)} request ids with more than one record, "
            f"{sum(duplicates.values()) - len(duplicates)} extra records, costing "
            f"{sum(int(r['cost_micro_usd']) * (n - 1) for rid, n in duplicates.items() for r in by_id[rid][:1])} "  # noqa: E501
            "micro-USD"
        )
        notes["duplicate_examples"] = dict(list(duplicates.items())[:5])
    if name == "sigterm":
        drained = set(notes.get("in_flight_at_sigterm", []))
        ended = Counter(
            f"{r.behaviour}/{r.fault}:{r.outcome}" for r in results if r.request_id in drained
        )
        notes["sigterm_in_flight_outcomes"] = dict(ended)
        for r in results:
            if (
                r.request_id in drained
                and r.behaviour == "full"
                and r.fault in ("ok", "cached", "429_first", "500_first")
                and r.outcome != "done"
            ):
                failures.append(f"(drain) {r.request_id} in flight at SIGTERM ended {r.outcome}")

    repaid = [
        int(match.group(1))
        for replica in replicas
        for match in re.finditer(
            r"(\d+) micro-USD spent while Redis was unreachable added to its shared spend",
            replica.log.read_text(errors="replace"),
        )
    ]
    if repaid:
        notes["outage_spend_repaid_micro_usd"] = sum(repaid)
    statuses = Counter(r["status"] for r in records)
    notes["errors_of_unanswered_records"] = dict(
        Counter(
            re.sub(r"\d+", "N", str(r.get("error", "")))[:140]
            for r in records
            if r["status"] in ("failed", "broken")
        ).most_common(8)
    )
    notes["record_statuses"] = dict(statuses)
    by_fault: dict[str, Counter[str]] = {}
    for r in results:
        by_fault.setdefault(f"{r.behaviour}/{r.fault}", Counter())[r.outcome] += 1
    return Outcome(
        scenario=name,
        policy=policy,
        calls=len(results),
        outcomes=dict(Counter(r.outcome for r in results)),
        by_fault={k: dict(v) for k, v in sorted(by_fault.items())},
        limit_micro_usd=limit,
        spent_micro_usd=spent,
        admin_spent_micro_usd=None if admin is None else admin["spent_micro_usd"],
        log_records=len(records),
        log_cost_micro_usd=log_cost,
        reserved_after_micro_usd=budget["reserved"],
        live_holds_after=budget["live_holds"],
        client_done=len(done),
        client_done_cost_micro_usd=sum(r.cost_micro_usd for r in done),
        exit_codes=exit_codes,
        events=events,
        notes=notes,
        failures=failures,
        log_errors=problems,
    )


SCENARIOS = (
    "faults",
    "sigkill",
    "sigterm",
    "redis-restart-open",
    "redis-restart-closed",
    "redis-pause-open",
    "redis-pause-closed",
    "replica-pause",
    "partition-open",
    "partition-closed",
)


def summary_line(outcome: Outcome) -> str:
    return (
        f"{outcome.scenario:22s} calls {outcome.calls} done {outcome.client_done} "
        f"spent {outcome.spent_micro_usd} log {outcome.log_cost_micro_usd} "
        f"({outcome.log_records} records) limit {outcome.limit_micro_usd} "
        f"reserved after {outcome.reserved_after_micro_usd}: "
        + ("OK" if not outcome.failures else f"{len(outcome.failures)} FAILED")
        + f"\n    outcomes {outcome.outcomes}; records {outcome.notes.get('record_statuses')}"
    )


async def amain(args: argparse.Namespace) -> int:
    # The fake provider's server logs every client that left mid-answer: expected here.
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    workdir = Path(tempfile.mkdtemp(prefix="fault-injection-"))
    print(f"work directory (replica logs): {workdir}", flush=True)
    outcomes = []
    for name in args.scenario or SCENARIOS:
        started = time.monotonic()
        async with asyncio.timeout(420):
            outcome = await run_scenario(name, args.calls, args.seed, workdir)
        outcome.notes["seconds"] = round(time.monotonic() - started, 1)
        outcomes.append(outcome)
        print(summary_line(outcome), flush=True)
        for failure in outcome.failures[:15]:
            print(f"    {failure}", flush=True)
    if not args.no_write:
        RESULTS.write_text(
            json.dumps(
                {
                    "calls_per_scenario": args.calls,
                    "seed": args.seed,
                    "replicas": REPLICAS,
                    "lease_s": LEASE_S,
                    "limit_usd": LIMIT_USD,
                    "scenarios": [asdict(o) for o in outcomes],
                },
                indent=1,
            )
            + "\n"
        )
    return 1 if any(o.failures for o in outcomes) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(amain(parser.parse_args())))


if __name__ == "__main__":
    main()
