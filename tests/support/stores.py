"""Stores for tests: the in-process one, and Redis under a key prefix no other test uses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from router_service.store import MemoryStore, RedisStore, Store


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def delete_prefix(client: Redis, prefix: str) -> None:
    """Remove every key under `prefix` (never FLUSHDB: the server is shared)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


@asynccontextmanager
async def redis_store(url: str) -> AsyncIterator[tuple[RedisStore, Redis, str]]:
    client = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
    prefix = unique_prefix()
    store = RedisStore(client, key_prefix=prefix)
    try:
        yield store, client, prefix
    finally:
        await store.aclose()
        await delete_prefix(client, prefix)
        await client.aclose()


@asynccontextmanager
async def any_store(kind: str, redis_url: str) -> AsyncIterator[Store]:
    if kind == "memory":
        yield MemoryStore()
        return
    async with redis_store(redis_url) as (store, _, _):
        yield store
