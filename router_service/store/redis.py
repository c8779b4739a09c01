"""The Redis store: shared by every replica, exact under any concurrency.

Budget and rate-limit updates are Lua scripts (see `scripts`), run with EVALSHA. All keys one
script touches carry the app as a hash tag (see `keys`), so the same scripts run unchanged on a
Redis Cluster. What each request sends (the scripts, the response-cache and warmth reads) goes
over one lean pipelined connection (`resp`) when the client is a standalone Redis over TCP, and
through redis-py otherwise; everything else always goes through redis-py. Connection and
timeout errors propagate as `redis.exceptions.RedisError`; `FailoverStore` applies the
configured policy to them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from router_service.store import scripts
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
    TokenCharge,
)
from router_service.store.keys import Keys
from router_service.store.resp import RespConnection, ScriptSource

__all__ = ["RedisClient", "RedisStore"]

RedisClient = Redis | RedisCluster

_STATS_TTL_S = 400 * 24 * 3600


def _limit_args(default: BudgetLimit) -> tuple[int, str]:
    limit = -1 if default.limit_micro_usd is None else default.limit_micro_usd
    return limit, repr(default.soft_threshold)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _usage(spent: Any, reserved: Any, limit: Any, soft: Any, overridden: Any) -> BudgetUsage:
    limit = int(limit)
    return BudgetUsage(
        spent_micro_usd=int(spent),
        reserved_micro_usd=int(reserved),
        limit=BudgetLimit(None if limit < 0 else limit, float(soft)),
        overridden=bool(int(overridden)),
    )


def _rate(allowed: Any, limited_by: Any, retry_ms: Any) -> RateDecision:
    if allowed:
        return RateDecision(True)
    return RateDecision(False, _text(limited_by), int(retry_ms) / 1000)


class RedisStore:
    """Budgets, rate limits, caches and statistics in a Redis (standalone or Cluster)."""

    def __init__(self, client: RedisClient, *, key_prefix: str = "llmr") -> None:
        self._redis = client
        self._fast = RespConnection.for_client(client)
        self._keys = Keys(key_prefix)
        self._reserve = self._register(scripts.BUDGET_RESERVE)
        self._admit = self._register(scripts.ADMIT)
        self._settle = self._register(scripts.BUDGET_SETTLE)
        self._settle_charge = self._register(scripts.BUDGET_SETTLE_CHARGE)
        self._shrink = self._register(scripts.BUDGET_SHRINK)
        self._renew = self._register(scripts.BUDGET_RENEW)
        self._usage = self._register(scripts.BUDGET_USAGE)
        self._add_spent = self._register(scripts.BUDGET_ADD_SPENT)
        self._take = self._register(scripts.RATE_TAKE)

    def _register(self, script: scripts.Lua) -> Callable[[list[str], list[Any]], Awaitable[Any]]:
        fast = self._fast
        if fast is None:
            registered: AsyncScript = self._redis.register_script(script.source)
            return lambda keys, args: registered(keys=keys, args=args)
        source = ScriptSource(script.source)
        return lambda keys, args: fast.evalsha(source, keys, args)

    def _budget_keys(self, app: str, period: Period) -> list[str]:
        keys = self._keys
        return [
            keys.budget(app, period.name),
            keys.leases(app, period.name),
            keys.budget_limit(app),
        ]

    async def reserve(
        self,
        app: str,
        period: Period,
        *,
        lease_id: str,
        amount_micro_usd: int,
        lease_ms: int,
        default: BudgetLimit,
    ) -> ReserveResult:
        limit, soft = _limit_args(default)
        granted, *usage = await self._reserve(
            self._budget_keys(app, period),
            [lease_id, amount_micro_usd, lease_ms, limit, soft, period.expire_at],
        )
        return ReserveResult(granted=bool(granted), usage=_usage(*usage))

    async def admit(
        self, app: str, period: Period, hold: HoldRequest, take: RateTake
    ) -> AdmitResult:
        limit, soft = _limit_args(hold.default)
        fits, *usage, allowed, limited_by, retry_ms = await self._admit(
            [*self._budget_keys(app, period), self._keys.rate(app)],
            [
                *(hold.lease_id, hold.amount_micro_usd, hold.lease_ms, limit, soft),
                period.expire_at,
                *(take.requests_per_minute, take.tokens_per_minute, take.requests, take.tokens),
            ],
        )
        return AdmitResult(
            fits=bool(fits), usage=_usage(*usage), rate=_rate(allowed, limited_by, retry_ms)
        )

    async def settle(
        self,
        app: str,
        period: Period,
        *,
        lease_id: str,
        actual_micro_usd: int,
        default: BudgetLimit,
        charge: TokenCharge | None = None,
    ) -> SettleResult:
        limit, soft = _limit_args(default)
        keys = self._budget_keys(app, period)
        args: list[Any] = [lease_id, actual_micro_usd, limit, soft]
        if charge is None:
            reply = await self._settle(keys, args)
        else:
            keys.append(self._keys.rate(app))
            args += [charge.tokens_per_minute, charge.tokens]
            reply = await self._settle_charge(keys, args)
        outcome, spent, reserved, limit_now, soft_now, overridden, crossed = reply
        return SettleResult(
            usage=_usage(spent, reserved, limit_now, soft_now, overridden),
            lease_found=int(outcome) != 0,
            crossed_soft=bool(crossed),
            replayed=int(outcome) == 2,
        )

    async def shrink(self, app: str, period: Period, lease_id: str, amount_micro_usd: int) -> None:
        await self._shrink(self._budget_keys(app, period)[:1], [lease_id, amount_micro_usd])

    async def renew(
        self, app: str, period: Period, lease_ids: Sequence[str], lease_ms: int
    ) -> list[str]:
        if not lease_ids:
            return []
        keys = self._budget_keys(app, period)[:2]
        gone = await self._renew(keys, [lease_ms, *lease_ids])
        return [_text(lease) for lease in gone]

    async def add_spent(
        self,
        app: str,
        period: Period,
        *,
        charge_id: str,
        amount_micro_usd: int,
        default: BudgetLimit,
    ) -> BudgetUsage:
        limit, soft = _limit_args(default)
        keys = self._keys
        _added, *usage = await self._add_spent(
            [keys.budget(app, period.name), keys.budget_limit(app)],
            [charge_id, amount_micro_usd, limit, soft, period.expire_at],
        )
        return _usage(*usage)

    async def budget_usage(self, app: str, period: Period, default: BudgetLimit) -> BudgetUsage:
        return _usage(
            *await self._usage(self._budget_keys(app, period), list(_limit_args(default)))
        )

    async def set_budget_limit(self, app: str, limit: BudgetLimit | None) -> None:
        if limit is None:
            await self._redis.delete(self._keys.budget_limit(app))
            return
        value = -1 if limit.limit_micro_usd is None else limit.limit_micro_usd
        await self._redis.hset(
            self._keys.budget_limit(app),
            mapping={"limit": value, "soft": repr(limit.soft_threshold)},
        )

    async def take(
        self,
        app: str,
        *,
        requests_per_minute: int,
        tokens_per_minute: int,
        requests: int,
        tokens: int,
        force: bool = False,
    ) -> RateDecision:
        return _rate(
            *await self._take(
                [self._keys.rate(app)],
                [requests_per_minute, tokens_per_minute, requests, tokens, int(force)],
            )
        )

    async def cache_get(self, app: str, key: str) -> bytes | None:
        if self._fast is not None:
            fast: bytes | None = await self._fast.execute("GET", self._keys.response(app, key))
            return fast
        value = await self._redis.get(self._keys.response(app, key))
        return value.encode() if isinstance(value, str) else value

    async def cache_put(self, app: str, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis.set(self._keys.response(app, key), value, px=int(ttl_s * 1000))

    async def mark_warm(self, app: str, prefix_hash: str, model: str, ttl_s: float) -> None:
        # One hash per prefix, model -> warm-until (Unix ms); the key lives as long as its
        # newest entry. Client clocks only decide warmth, which is a preference, not a limit.
        key = self._keys.warm(app, prefix_hash)
        ttl_ms = int(ttl_s * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, model, int(time.time() * 1000) + ttl_ms)
            # Set the key's lifetime when it has none, extend it when this entry lives longer.
            pipe.pexpire(key, ttl_ms, nx=True)
            pipe.pexpire(key, ttl_ms, gt=True)
            await pipe.execute()

    async def warm_models(self, app: str, prefix_hash: str) -> frozenset[str]:
        key = self._keys.warm(app, prefix_hash)
        if self._fast is not None:
            flat = await self._fast.execute("HGETALL", key)
            entries: dict[Any, Any] = dict(zip(flat[::2], flat[1::2], strict=True))
        else:
            entries = await self._redis.hgetall(key)
        now_ms = time.time() * 1000
        return frozenset(_text(m) for m, until in entries.items() if int(until) > now_ms)

    async def add_stats(self, app: str, period: Period, counts: Mapping[str, int]) -> None:
        key = self._keys.stats(app, period.name)
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, value in counts.items():
                pipe.hincrby(key, name, value)
            pipe.expireat(key, period.expire_at + _STATS_TTL_S)
            await pipe.execute()

    async def read_stats(self, app: str, period: Period) -> dict[str, int]:
        entries: dict[Any, Any] = await self._redis.hgetall(self._keys.stats(app, period.name))
        return {_text(name): int(value) for name, value in entries.items()}

    async def aclose(self) -> None:
        """Closes the lean connection; the redis-py client belongs to the composition root."""
        if self._fast is not None:
            await self._fast.aclose()
