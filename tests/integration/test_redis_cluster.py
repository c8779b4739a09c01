"""The store's scripts on a local three-node Redis Cluster: the per-app hash tags put every key
one script touches in one slot, so budgets stay exact on a cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, ResponseError

from router_service._proto import router_pb2 as pb
from router_service.auth import App
from router_service.budgets import BudgetLedger, period_of
from router_service.config import AppConfig, BudgetConfig
from router_service.store import (
    BudgetLimit,
    HoldRequest,
    RateTake,
    RedisStore,
    TokenCharge,
    scripts,
)
from router_service.store.keys import Keys
from tests.component.test_route_api import route_request
from tests.support.budget_load import concurrent_calls
from tests.support.configs import ADMIN_KEY, DEMO_KEY, fast_config
from tests.support.redis_cluster import redis_cluster
from tests.support.servers import auth, running_router

pytestmark = pytest.mark.integration


def app(name: str) -> App:
    budget = BudgetConfig(monthly_limit_usd=Decimal("1.00"))
    return App(name=name, config=AppConfig(key_sha256="0" * 64, budget=budget), tasks={})


@pytest.fixture(scope="module")
def cluster_ports() -> Iterator[list[int]]:
    with redis_cluster() as ports:
        yield ports


@pytest.fixture
async def cluster(cluster_ports: list[int]) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    await client.initialize()
    yield client
    await client.aclose()


async def test_each_apps_keys_share_one_slot_and_apps_spread_over_nodes(
    cluster: RedisCluster,
) -> None:
    keys = Keys("llmr")
    nodes = set()
    for i in range(30):
        name = f"app-{i}"
        slots = {
            cluster.keyslot(key)
            for key in (
                keys.budget(name, "2026-11"),
                keys.leases(name, "2026-11"),
                keys.budget_limit(name),
                keys.rate(name),
                keys.stats(name, "2026-11"),
            )
        }
        assert len(slots) == 1
        nodes.add(cluster.nodes_manager.get_node_from_slot(slots.pop()).name)
    assert len(nodes) == 3


async def test_budget_scripts_run_on_the_cluster(cluster: RedisCluster) -> None:
    store = RedisStore(cluster, key_prefix="clustertest")
    period = period_of(1_795_000_000)
    limit = BudgetLimit(1_000)
    for i in range(12):
        name = f"app-{i}"
        granted = await store.reserve(
            name, period, lease_id="l1", amount_micro_usd=700, lease_ms=60_000, default=limit
        )
        refused = await store.reserve(
            name, period, lease_id="l2", amount_micro_usd=400, lease_ms=60_000, default=limit
        )
        assert granted.granted and not refused.granted
        assert await store.renew(name, period, ["l1", "l2"], 60_000) == ["l2"]
        settled = await store.settle(
            name, period, lease_id="l1", actual_micro_usd=300, default=limit
        )
        assert settled.usage.spent_micro_usd == 300 and settled.usage.reserved_micro_usd == 0
        await store.set_budget_limit(name, BudgetLimit(5_000))
        assert (await store.budget_usage(name, period, limit)).limit.limit_micro_usd == 5_000
        assert (
            await store.take(name, requests_per_minute=1, tokens_per_minute=0, requests=1, tokens=0)
        ).allowed
        admitted = await store.admit(
            name, period, HoldRequest("l3", 700, 60_000, limit), RateTake(0, 100, 1, 10)
        )
        assert admitted.granted and admitted.usage.reserved_micro_usd == 700
        charge = TokenCharge(tokens_per_minute=100, tokens=90)
        await store.settle(
            name, period, lease_id="l3", actual_micro_usd=1, default=limit, charge=charge
        )
        # 100 - 10 - 90: the token bucket is empty.
        tokens_only = {"requests_per_minute": 0, "tokens_per_minute": 100}
        assert not (await store.take(name, **tokens_only, requests=0, tokens=5)).allowed


async def test_without_hash_tags_the_same_script_is_refused(cluster: RedisCluster) -> None:
    # The control: keys of one app without the braces land in different slots.
    untagged = ["llmr:x:budget:2026-11", "llmr:x:leases:2026-11", "llmr:x:budget_limit"]
    assert len({cluster.keyslot(k) for k in untagged}) > 1
    with pytest.raises((RedisClusterException, ResponseError)):
        await cluster.eval(
            scripts.BUDGET_RESERVE.source, 3, *untagged, "l", 1, 1000, 100, "0.8", 2_000_000_000
        )


async def test_concurrent_calls_from_several_clients_stay_within_the_limit(
    cluster_ports: list[int],
) -> None:
    # The async cluster client opens a connection per concurrent command (it has no blocking
    # pool), so each client keeps at most 50 calls in flight, as a pool would; and it must be
    # initialized before a burst, or concurrent first commands race its own initialization.
    clients = [
        RedisCluster(host="127.0.0.1", port=port, max_connections=1000) for port in cluster_ports
    ]
    ledgers = [BudgetLedger(RedisStore(c, key_prefix="clusterload"), lease_s=30) for c in clients]
    for client in clients:
        await client.initialize()
    try:
        result = await concurrent_calls(ledgers, app("load"), 400, per_client=50)
        usage = (await ledgers[0].read("load", app("load").config)).usage
        assert result.refused > 0
        assert usage.spent_micro_usd == result.settled_micro_usd <= 1_000_000
        assert usage.reserved_micro_usd == 0
    finally:
        for ledger in ledgers:
            await ledger.aclose()
        for client in clients:
            await client.aclose()


async def test_a_router_serves_budgets_and_its_call_log_from_the_cluster(
    cluster_ports: list[int],
) -> None:
    """The whole service on `store.cluster`: routed calls settle in the cluster, Admin reads
    the budget from it, and the call log's stream and owner keys are written there."""
    prefix = "clusterrouter"
    config = fast_config(
        store={
            "backend": "redis",
            "cluster": True,
            "redis_url": f"redis://127.0.0.1:{cluster_ports[0]}/0",
            "key_prefix": prefix,
        },
        call_log={"enabled": True, "stream": f"{prefix}:calllog"},
    )
    async with running_router(config) as running:
        await running.admin.SetBudget(
            pb.SetBudgetRequest(app_id="demo", monthly_limit_usd=5.0), metadata=auth(ADMIN_KEY)
        )
        costs = []
        for _ in range(5):
            events = [
                e async for e in running.router.Route(route_request(), metadata=auth(DEMO_KEY))
            ]
            costs.append(events[-1].done.cost_micro_usd)
        budget = await running.admin.GetBudget(
            pb.GetBudgetRequest(app_id="demo"), metadata=auth(ADMIN_KEY)
        )
        deadline = asyncio.get_running_loop().time() + 5
        while budget.reserved_usd > 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            budget = await running.admin.GetBudget(
                pb.GetBudgetRequest(app_id="demo"), metadata=auth(ADMIN_KEY)
            )
    assert budget.monthly_limit_usd == 5.0
    assert round(budget.spent_usd * 1e6) == sum(costs) > 0
    assert budget.reserved_usd == 0
    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    try:
        assert await client.xlen(f"{prefix}:calllog") >= 5
    finally:
        await client.aclose()
