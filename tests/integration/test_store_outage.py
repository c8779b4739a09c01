"""Redis going away and coming back: the configured policy decides, nothing hangs or crashes,
and shared counting resumes when Redis returns. Uses a `redis-server` of its own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack

import grpc
import pytest
from grpc import aio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from router_service import alerts
from router_service._proto import router_pb2 as pb
from router_service.auth import App
from router_service.budgets import BudgetLedger, period_of
from router_service.config import AppConfig, BudgetConfig
from router_service.errors import StoreUnavailable
from router_service.store import BudgetLimit, FailoverStore, MemoryStore, Period, RedisStore
from router_service.telemetry import attributes as a
from router_service.telemetry import metrics as m
from tests.support.configs import DEMO_KEY, fast_config
from tests.support.redis_server import BUSY, free_port, redis_server_process
from tests.support.servers import auth, running_router
from tests.support.telemetry import Recorded
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

PERIOD = Period("2026-11", expire_at=2_000_000_000)
LIMIT = BudgetLimit(1_000_000)


class RedisProcess:
    """A redis-server on a fixed port that a test can stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self._stack: ExitStack | None = None

    def start(self) -> None:
        stack = ExitStack()
        stack.enter_context(redis_server_process(port=self.port))
        self._stack = stack

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    process = RedisProcess()
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def client(redis_process: RedisProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(
        redis_process.url,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    yield client
    await client.aclose()


@pytest.fixture
async def failover(client: Redis) -> AsyncIterator[Callable[[str], FailoverStore]]:
    """Makes failover stores over `client` with a policy, and closes them afterwards."""
    made: list[FailoverStore] = []

    def make(policy: str) -> FailoverStore:
        store = FailoverStore(
            RedisStore(client, key_prefix="outage"),
            MemoryStore(),
            policy=policy,  # type: ignore[arg-type]
            timeout_s=0.5,
        )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


async def reserve(store: FailoverStore, lease: str, amount: int) -> bool:
    result = await store.reserve(
        "a", PERIOD, lease_id=lease, amount_micro_usd=amount, lease_ms=60_000, default=LIMIT
    )
    return result.granted


async def wait_until_available(store: FailoverStore, deadline_s: float = 10) -> None:
    deadline = time.monotonic() + deadline_s
    while not store.available:
        assert time.monotonic() < deadline, "Redis never came back"
        with contextlib.suppress(StoreUnavailable):
            await store.budget_usage("a", PERIOD, LIMIT)
        await asyncio.sleep(0.05)


async def test_fail_open_counts_locally_then_resumes_on_redis(
    redis_process: RedisProcess, client: Redis, failover: Callable[[str], FailoverStore]
) -> None:
    store = failover("fail_open")
    assert await reserve(store, "r1", 600_000)
    settled = await store.settle(
        "a", PERIOD, lease_id="r1", actual_micro_usd=500_000, default=LIMIT
    )
    assert settled.usage.spent_micro_usd == 500_000
    unavailable = alerts.COUNTS["store_unavailable.fail_open"]

    redis_process.stop()
    started = time.monotonic()
    # Local counting starts from the last spend Redis reported: 500k of 1M spent.
    assert await reserve(store, "l1", 400_000)
    assert not await reserve(store, "l2", 200_000)
    assert time.monotonic() - started < 1.5
    assert not store.available
    assert alerts.COUNTS["store_unavailable.fail_open"] > unavailable
    local = await store.settle("a", PERIOD, lease_id="l1", actual_micro_usd=100, default=LIMIT)
    assert local.lease_found and local.usage.spent_micro_usd == 500_100

    redis_process.start()  # a fresh, empty Redis on the same port
    await wait_until_available(store)
    assert await reserve(store, "r2", 900_000)
    raw = await client.hgetall("outage:{a}:budget:2026-11")
    assert int(raw[b"reserved"]) == 900_000
    # What the outage spent joins the shared spend once Redis is back (here a fresh Redis: the
    # spend from before the outage went with the old one).
    await eventually(lambda: store.owed_micro_usd == 0, within_s=5)
    raw = await client.hgetall("outage:{a}:budget:2026-11")
    assert int(raw[b"spent"]) == 100


async def test_spend_during_an_outage_is_added_to_redis_once_it_is_back(
    redis_process: RedisProcess, client: Redis, failover: Callable[[str], FailoverStore]
) -> None:
    """The audit's case: Redis keeps its data through the outage (it stops answering, then
    answers again); the calls held locally meanwhile must count in the shared spend, and a hold
    still open when Redis returns settles locally and is added too, all of it once."""
    store = failover("fail_open")
    assert await reserve(store, "r1", 10_000)
    await store.settle("a", PERIOD, lease_id="r1", actual_micro_usd=2_000, default=LIMIT)
    blocker = Redis.from_url(redis_process.url, socket_timeout=10)
    busy = asyncio.create_task(blocker.eval(BUSY, 0, 1500))  # type: ignore[misc]
    await asyncio.sleep(0.1)
    for lease in ("l1", "l2", "l3"):
        assert await reserve(store, lease, 10_000)  # locally, Redis being busy
    assert not store.available
    for lease in ("l1", "l2"):
        await store.settle("a", PERIOD, lease_id=lease, actual_micro_usd=2_000, default=LIMIT)
    assert store.owed_micro_usd == 4_000
    await busy
    await blocker.aclose()
    await wait_until_available(store)
    await store.settle("a", PERIOD, lease_id="l3", actual_micro_usd=2_000, default=LIMIT)
    await eventually(lambda: store.owed_micro_usd == 0, within_s=5)
    usage = await store.budget_usage("a", PERIOD, LIMIT)
    assert usage.spent_micro_usd == 8_000
    # (The reserve of l1 that timed out ran in Redis once it was free: its hold there, never
    # settled, is released when its lease runs out, as for a replica that died.)
    assert usage.reserved_micro_usd in (0, 10_000)


async def test_fail_closed_refuses_at_once_and_recovers(
    redis_process: RedisProcess, failover: Callable[[str], FailoverStore]
) -> None:
    store = failover("fail_closed")
    assert await reserve(store, "r1", 1)
    redis_process.stop()
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await reserve(store, "x", 1)
        assert time.monotonic() - started < 1.5
    redis_process.start()
    await wait_until_available(store)
    assert await reserve(store, "r2", 1)


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_route_follows_the_policy_while_redis_is_down(
    redis_process: RedisProcess, policy: str
) -> None:
    config = fast_config(store={"redis_url": redis_process.url, "on_unavailable": policy})
    request = pb.RouteRequest(
        task="summarization",
        messages=[pb.Message(role="user", content="Summarize the incident report.")],
        max_output_tokens=20,
    )
    recorded = Recorded()
    async with running_router(config, meter_provider=recorded.meter_provider) as running:
        events = [e async for e in running.router.Route(request, metadata=auth(DEMO_KEY))]
        assert events[-1].HasField("done")
        redis_process.stop()
        started = time.monotonic()
        if policy == "fail_open":
            events = [e async for e in running.router.Route(request, metadata=auth(DEMO_KEY))]
            assert events[-1].done.cost_micro_usd > 0
        else:
            with pytest.raises(aio.AioRpcError) as caught:
                async for _ in running.router.Route(request, metadata=auth(DEMO_KEY)):
                    pass
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "fail_closed" in (caught.value.details() or "")
            # The refusal is recorded (a decision, no provider call).
            decisions = sum(p.value for p in recorded.points(m.ROUTING_DECISIONS))
            calls = sum(p.count for p in recorded.points(m.OPERATION_DURATION))
            assert (decisions, calls) == (2, 1)
        assert time.monotonic() - started < 5
        redis_process.start()
        assert running.server.accounting is not None
        store = running.server.accounting.store
        assert isinstance(store, FailoverStore)
        deadline = time.monotonic() + 15
        while True:
            try:
                events = [e async for e in running.router.Route(request, metadata=auth(DEMO_KEY))]
            except aio.AioRpcError:
                pass
            else:
                if store.available:
                    break
            assert time.monotonic() < deadline, "the router never went back to Redis"
            await asyncio.sleep(0.05)
        assert events[-1].HasField("done")
    recorded.shutdown()


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_a_settle_redis_cannot_take_is_retried_there_and_counts_once(
    redis_process: RedisProcess,
    client: Redis,
    failover: Callable[[str], FailoverStore],
    policy: str,
) -> None:
    """The settle of a hold Redis granted never goes to the local store: it waits and is
    retried. Here Redis runs it after the client gave up (the reply is lost), so the retry is
    a replay, which must change nothing."""
    store = failover(policy)
    ledger = BudgetLedger(store, lease_s=30)
    app = App("a", AppConfig(key_sha256="0" * 64, budget=BudgetConfig(monthly_limit_usd=1)), {})
    hold = await ledger.reserve(app, 600_000)
    blocker = Redis.from_url(redis_process.url, socket_timeout=10)
    busy = asyncio.create_task(blocker.eval(BUSY, 0, 1500))  # type: ignore[misc]
    await asyncio.sleep(0.1)
    await ledger.settle(hold, 500_000)  # times out after 0.5 s; queued
    assert ledger.unsettled == 1 and not store.available
    await busy
    await blocker.aclose()
    await eventually(lambda: not ledger.unsettled, within_s=10)
    raw = await client.hgetall(f"outage:{{a}}:budget:{period_of(time.time()).name}")
    assert int(raw[b"spent"]) == 500_000 and int(raw[b"reserved"]) == 0
    await ledger.aclose()


async def test_an_outage_is_a_metric(redis_process: RedisProcess) -> None:
    recorded = Recorded()
    config = fast_config(store={"redis_url": redis_process.url, "on_unavailable": "fail_open"})
    request = pb.RouteRequest(
        task="summarization",
        messages=[pb.Message(role="user", content="Summarize the incident report.")],
        max_output_tokens=20,
    )
    async with running_router(config, meter_provider=recorded.meter_provider) as running:
        redis_process.stop()
        events = [e async for e in running.router.Route(request, metadata=auth(DEMO_KEY))]
        assert events[-1].HasField("done")
        alerts_seen = {p.attributes[a.ALERT_EVENT]: p.value for p in recorded.points(m.ALERTS)}
        assert alerts_seen["store_unavailable.fail_open"] >= 1
    recorded.shutdown()
