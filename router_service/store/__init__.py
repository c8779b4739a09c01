"""Shared state for budgets, rate limits, caches and statistics: Redis or in-process.

`build_store` picks the implementation from config: the in-process `MemoryStore` when no Redis
is configured (one replica, the embedded default), else `RedisStore` behind `FailoverStore`,
which applies the configured unreachable-Redis policy.
"""

from __future__ import annotations

from router_service.config import StoreConfig
from router_service.store.base import (
    AdmitResult,
    BudgetLimit,
    BudgetUsage,
    HoldRequest,
    Period,
    RateDecision,
    RateTake,
    ReserveResult,
    SettleResult,
    Store,
    TokenCharge,
)
from router_service.store.failover import FailoverStore
from router_service.store.memory import MemoryStore
from router_service.store.redis import RedisClient, RedisStore

__all__ = [
    "AdmitResult",
    "BudgetLimit",
    "BudgetUsage",
    "FailoverStore",
    "HoldRequest",
    "MemoryStore",
    "Period",
    "RateDecision",
    "RateTake",
    "RedisClient",
    "RedisStore",
    "ReserveResult",
    "SettleResult",
    "Store",
    "TokenCharge",
    "build_store",
]


def build_store(config: StoreConfig, redis: RedisClient | None) -> Store:
    """The store for `config`: in-process without a Redis client, else Redis with failover."""
    if redis is None:
        return MemoryStore()
    return FailoverStore(
        RedisStore(redis, key_prefix=config.key_prefix),
        MemoryStore(),
        policy=config.on_unavailable,
        timeout_s=config.operation_timeout_s,
    )
