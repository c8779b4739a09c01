"""The one Redis client of a router process: standalone or Cluster, built from the store config.

Short timeouts and one quick retry: an unreachable Redis must fail an operation in about a
second (the store's unavailability policy then decides), never stall requests for the many
seconds redis-py's default retries add up to.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from router_service.config import StoreConfig
from router_service.store.redis import RedisClient

__all__ = ["connect"]

log = logging.getLogger(__name__)

_MAX_CONNECTIONS = 64


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.05, base=0.01), 1)


async def connect(config: StoreConfig, url: str) -> RedisClient:
    """A client for `url`; with `store.cluster`, for the Redis Cluster that node belongs to."""
    timeout = config.operation_timeout_s
    if config.cluster:
        cluster = RedisCluster.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            max_connections=_MAX_CONNECTIONS,
            retry=_retry(),
        )
        try:
            # Learn the slot map now rather than on the first requests.
            await asyncio.wait_for(cluster.initialize(), timeout=2 * timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("Redis Cluster at start-up: %s; connecting on first use", exc)
        return cluster
    # Under load, wait briefly for a pooled connection rather than fail at once (the default
    # pool raises "Too many connections" past its limit).
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=_MAX_CONNECTIONS,
        timeout=timeout,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=10,
        retry=_retry(),
    )
    return Redis.from_pool(pool)
