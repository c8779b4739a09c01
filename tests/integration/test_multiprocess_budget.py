"""The issue's check: three `llm-router serve` processes sharing one Redis, a $1.00 budget set
through Admin.SetBudget, 400 concurrent Route calls whose worst cases add up to several dollars.
Settled spend stays within $1.00, no reservation is left when the calls end, every refusal is
RESOURCE_EXHAUSTED with a QuotaFailure; then a replica killed with SIGKILL mid-load leaks nothing
once its leases run out."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
import yaml
from grpc import aio
from redis.asyncio import Redis

from router_service._proto import router_pb2 as pb
from router_service._proto import router_pb2_grpc
from tests.support.configs import ADMIN_KEY, DEMO_KEY, fast_raw
from tests.support.processes import replicas, wait_serving
from tests.support.quota import quota_violations
from tests.support.servers import auth
from tests.support.stores import delete_prefix, unique_prefix

pytestmark = pytest.mark.integration

LEASE_S = 2
CALLS = 400
REQUEST = pb.RouteRequest(
    task="summarization",
    messages=[pb.Message(role="user", content="Summarize the incident review in detail.")],
    max_output_tokens=300,
    # Frontier: the hold is the dearest frontier candidate's worst case (claude-opus-4.8, about
    # $0.0075); gpt-5.5 serves it for about $0.0045. 400 worst cases: about $3.
    hints=pb.RouteHints(tier=pb.TIER_PREFERENCE_FRONTIER),
)


def write_config(path: Path, redis_url: str, prefix: str) -> None:
    # Answers as long as the request allows: 300 tokens (0.2 s) for the load, 1,500 (1 s) for
    # the calls in flight when a replica is killed, so that none of them ends (and settles)
    # before the kill on a loaded machine.
    streaming = {"ttft_ms": 20, "tokens_per_second": 1500, "answer_tokens": 1500}
    raw = fast_raw(
        providers={"sim-openai": streaming, "sim-anthropic": streaming},
        apps={"demo": {"rate_limits": None, "budget": {"monthly_limit_usd": 1000}}},
        store={
            "backend": "redis",
            "redis_url": redis_url,
            "key_prefix": prefix,
            "reservation_lease_s": LEASE_S,
            # A loaded 2-core machine must not be mistaken for an unreachable Redis.
            "operation_timeout_s": 5,
        },
    )
    path.write_text(yaml.safe_dump(raw))


async def route(stub: router_pb2_grpc.RouterStub, delay: float) -> tuple[str, int]:
    """('ok', cost) or (status code name, 0); refusals must carry a QuotaFailure."""
    await asyncio.sleep(delay)
    call = stub.Route(REQUEST, metadata=auth(DEMO_KEY), timeout=60)
    try:
        async for event in call:
            if event.HasField("done"):
                return "ok", event.done.cost_micro_usd
    except aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            [violation] = quota_violations(exc.trailing_metadata())
            assert violation.subject == "app:demo"
        return exc.code().name, 0
    return "no done event", 0


async def get_budget(admin: router_pb2_grpc.AdminStub) -> pb.GetBudgetResponse:
    return await admin.GetBudget(pb.GetBudgetRequest(app_id="demo"), metadata=auth(ADMIN_KEY))


async def test_three_replicas_share_one_exact_budget(
    tmp_path: Path, redis_url_fixture: str
) -> None:
    prefix = unique_prefix()
    config = tmp_path / "router.yaml"
    write_config(config, redis_url_fixture, prefix)
    cleanup = Redis.from_url(redis_url_fixture)
    try:
        with replicas(config, 3, tmp_path) as running:
            await wait_serving([r.target for r in running])
            channels = [aio.insecure_channel(r.target) for r in running]
            try:
                routers = [router_pb2_grpc.RouterStub(c) for c in channels]
                admin = router_pb2_grpc.AdminStub(channels[0])
                await admin.SetBudget(
                    pb.SetBudgetRequest(app_id="demo", monthly_limit_usd=1.00),
                    metadata=auth(ADMIN_KEY),
                )

                rng = random.Random(5)
                results = await asyncio.gather(
                    *(route(routers[i % 3], rng.random() * 2) for i in range(CALLS))
                )
                outcomes = Counter(kind for kind, _ in results)
                assert set(outcomes) == {"ok", "RESOURCE_EXHAUSTED"}, outcomes
                assert outcomes["RESOURCE_EXHAUSTED"] > 0 and outcomes["ok"] > 100
                billed = sum(cost for _, cost in results)

                # Settles run just after each stream ends; give them a moment.
                deadline = time.monotonic() + 10
                budget = await get_budget(admin)
                while budget.reserved_usd > 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    budget = await get_budget(admin)
                assert budget.reserved_usd == 0
                assert round(budget.spent_usd * 1e6) == billed
                assert budget.spent_usd <= 1.00
                # Most of the budget was really spent: refusals came from holds of calls in
                # flight and from spend, never from anything leaking.
                assert budget.spent_usd > 0.5

                # SIGKILL a replica while its calls hold reservations.
                await admin.SetBudget(
                    pb.SetBudgetRequest(app_id="demo", monthly_limit_usd=3.00),
                    metadata=auth(ADMIN_KEY),
                )
                victim = running[2]
                long_request = pb.RouteRequest()
                long_request.CopyFrom(REQUEST)
                long_request.max_output_tokens = 1500
                in_flight = [
                    routers[2].Route(long_request, metadata=auth(DEMO_KEY), timeout=30)
                    for _ in range(30)
                ]
                for call in in_flight:
                    first = await call.read()
                    assert first.HasField("decision")  # its hold is in Redis
                victim.kill()
                leaked = await get_budget(admin)
                assert leaked.reserved_usd > 0.1
                await asyncio.sleep(LEASE_S + 0.5)
                after = await get_budget(admin)
                assert after.reserved_usd == 0
                assert after.spent_usd == budget.spent_usd
                for call in in_flight:
                    call.cancel()
            finally:
                for channel in channels:
                    await channel.close()
    finally:
        await delete_prefix(cleanup, prefix)
        await cleanup.aclose()
