"""SIGTERM's drain settles the reservations of calls it cuts off."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from router_service._proto import router_pb2 as pb
from router_service.budgets import period_of
from tests.support.configs import DEMO_KEY, fast_config
from tests.support.servers import auth, running_router
from tests.support.stores import delete_prefix, unique_prefix

pytestmark = pytest.mark.integration


async def test_streams_cut_by_the_drain_are_settled(redis_url_fixture: str) -> None:
    prefix = unique_prefix()
    slow = {"ttft_ms": 0, "tokens_per_second": 200, "answer_tokens": 2000}
    config = fast_config(
        providers={"sim-openai": slow},
        store={"redis_url": redis_url_fixture, "key_prefix": prefix},
    )
    request = pb.RouteRequest(
        task="summarization",
        messages=[pb.Message(role="user", content="Summarize everything, at length.")],
        max_output_tokens=2000,
    )
    client = Redis.from_url(redis_url_fixture)
    try:
        async with running_router(config) as running:
            calls = [running.router.Route(request, metadata=auth(DEMO_KEY)) for _ in range(5)]
            for call in calls:
                assert (await call.read()).HasField("decision")
            budget_key = f"{prefix}:{{demo}}:budget:{period_of(time.time()).name}"
            assert int(await client.hget(budget_key, "reserved") or 0) > 0
            await running.server.stop(grace=0.2)
            for call in calls:
                call.cancel()
        raw = await client.hgetall(budget_key)
        assert int(raw[b"reserved"]) == 0
        assert int(raw[b"spent"]) > 0
        assert await client.zcard(f"{prefix}:{{demo}}:leases:{budget_key.rsplit(':', 1)[1]}") == 0
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()
