"""Exact budgets under concurrency: several clients, one Redis, one app."""

from __future__ import annotations

from decimal import Decimal

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from router_service.auth import App
from router_service.budgets import BudgetLedger
from router_service.config import AppConfig, BudgetConfig
from router_service.store import RedisStore
from tests.support.budget_load import concurrent_calls
from tests.support.stores import delete_prefix, unique_prefix

pytestmark = pytest.mark.integration

APP = App(
    name="load",
    config=AppConfig(key_sha256="0" * 64, budget=BudgetConfig(monthly_limit_usd=Decimal("1.00"))),
    tasks={},
)


async def test_settled_spend_never_exceeds_the_limit(redis_url_fixture: str) -> None:
    prefix = unique_prefix()
    clients = [
        Redis.from_pool(BlockingConnectionPool.from_url(redis_url_fixture, max_connections=32))
        for _ in range(3)
    ]
    stores = [RedisStore(c, key_prefix=prefix) for c in clients]
    ledgers = [BudgetLedger(store, lease_s=30) for store in stores]
    try:
        # 600 calls whose worst cases add up to about $12 against a $1.00 budget.
        result = await concurrent_calls(ledgers, APP, 600)
        snapshot = await ledgers[0].read(APP.name, APP.config)
        assert result.refused > 0 and result.granted > 0
        assert snapshot.usage.spent_micro_usd == result.settled_micro_usd <= 1_000_000
        assert snapshot.usage.reserved_micro_usd == 0
        assert all(ledger.open_holds == 0 for ledger in ledgers)
    finally:
        for ledger, store in zip(ledgers, stores, strict=True):
            await ledger.aclose()
            await store.aclose()
        await delete_prefix(clients[0], prefix)
        for client in clients:
            await client.aclose()
