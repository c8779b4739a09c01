"""The in-process store: the embedded default for a single replica, and the local fallback
when Redis is unreachable and the policy is fail-open.

Every method finishes without awaiting anything, so on one event loop each runs atomically, the
same guarantee a Lua script gives in Redis. The semantics match `RedisStore` operation for
operation (the store tests run against both). Caches are bounded so a long-running process
cannot grow without limit.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

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

__all__ = ["MemoryStore"]

_MAX_CACHE_ENTRIES = 10_000
_MAX_WARM_PREFIXES = 10_000
_MINUTE_MS = 60_000
_ALLOWED = RateDecision(True)
# How long a lease that ran out is remembered, so its late settle still counts (as in Redis).
_FORGET_MS = 24 * 3600 * 1000


@dataclass
class _Budget:
    spent: int = 0
    reserved: int = 0
    # lease id -> (amount, expiry in ms on the store's clock)
    holds: dict[str, tuple[int, int]] = field(default_factory=dict)
    # lease id -> when to forget it: leases that ran out before they were settled.
    expired: dict[str, int] = field(default_factory=dict)
    soft_alerted: bool = False
    # Charge ids of spend added from elsewhere (`add_spent`), so that a repeat adds nothing.
    charges: set[str] = field(default_factory=set)

    def release_expired(self, now_ms: int) -> None:
        ran_out = [lease for lease, (_, expiry) in self.holds.items() if expiry <= now_ms]
        for lease in ran_out:
            self.reserved -= self.holds.pop(lease)[0]
            self.expired[lease] = now_ms + _FORGET_MS
        forgotten = [lease for lease, at in self.expired.items() if at <= now_ms]
        for lease in forgotten:
            del self.expired[lease]


@dataclass
class _Bucket:
    level: float
    at_ms: int

    def refilled(self, per_minute: int, now_ms: int) -> float:
        elapsed = max(0, now_ms - self.at_ms)
        return min(float(per_minute), self.level + elapsed * per_minute / _MINUTE_MS)


class MemoryStore:
    """Budgets, rate limits, caches and statistics in this process's memory."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._limits: dict[str, BudgetLimit] = {}
        # (app, "requests" or "tokens") -> bucket
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # (app, key) -> (value, expiry); oldest first, bounded.
        self._cache: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()
        # (app, prefix hash) -> model -> expiry
        self._warm: OrderedDict[tuple[str, str], dict[str, float]] = OrderedDict()
        self._stats: dict[tuple[str, str], Counter[str]] = {}

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _budget(self, app: str, period: Period) -> _Budget:
        budget = self._budgets.get((app, period.name))
        if budget is None:
            budget = self._budgets[(app, period.name)] = _Budget()
        budget.release_expired(self._now_ms())
        return budget

    def _usage(self, app: str, budget: _Budget, default: BudgetLimit) -> BudgetUsage:
        override = self._limits.get(app)
        return BudgetUsage(
            spent_micro_usd=budget.spent,
            reserved_micro_usd=budget.reserved,
            limit=override or default,
            overridden=override is not None,
        )

    def seed_spent(self, app: str, period: Period, spent_micro_usd: int) -> None:
        """Start counting from a spend known elsewhere (the last one Redis reported)."""
        budget = self._budget(app, period)
        budget.spent = max(budget.spent, spent_micro_usd)

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
        hold = HoldRequest(lease_id, amount_micro_usd, lease_ms, default)
        fits, usage, _ = self._admit(app, period, hold, None)
        return ReserveResult(granted=fits, usage=usage)

    async def admit(
        self, app: str, period: Period, hold: HoldRequest, take: RateTake
    ) -> AdmitResult:
        return AdmitResult(*self._admit(app, period, hold, take))

    def _admit(
        self, app: str, period: Period, hold: HoldRequest, take: RateTake | None
    ) -> tuple[bool, BudgetUsage, RateDecision]:
        """A hold and, unless `take` is None (a reserve), a rate-limit take: both or neither.
        Returns whether the hold fits, the usage after it, and the rate-limit decision."""
        budget = self._budget(app, period)
        if hold.lease_id in budget.holds or hold.lease_id in budget.expired:
            # Granted before (and its rate allowance taken then): granted again, unchanged.
            return True, self._usage(app, budget, hold.default), _ALLOWED
        limit = (self._limits.get(app) or hold.default).limit_micro_usd
        amount = hold.amount_micro_usd
        fits = limit is None or budget.spent + budget.reserved + amount <= limit
        rate, buckets = _ALLOWED, None
        if take is not None:
            buckets = self._buckets_of(app, take.requests_per_minute, take.tokens_per_minute)
            rate = buckets.check(take.requests, take.tokens)
        if fits and rate.allowed:
            if buckets is not None and take is not None:
                buckets.apply(take.requests, take.tokens)
            budget.holds[hold.lease_id] = (amount, self._now_ms() + hold.lease_ms)
            budget.reserved += amount
        return fits, self._usage(app, budget, hold.default), rate

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
        budget = self._budget(app, period)
        held = budget.holds.pop(lease_id, None)
        if held is not None:
            budget.reserved -= held[0]
        elif budget.expired.pop(lease_id, None) is None:
            # Settled before: a retry changes nothing.
            usage = self._usage(app, budget, default)
            return SettleResult(usage=usage, lease_found=True, crossed_soft=False, replayed=True)
        budget.spent += actual_micro_usd
        if charge is not None:
            self._buckets_of(app, 0, charge.tokens_per_minute).apply(0, charge.tokens)
        usage = self._usage(app, budget, default)
        crossed = False
        limit = usage.limit.limit_micro_usd
        if limit and not budget.soft_alerted and budget.spent >= limit * usage.limit.soft_threshold:
            budget.soft_alerted = crossed = True
        return SettleResult(usage=usage, lease_found=held is not None, crossed_soft=crossed)

    async def shrink(self, app: str, period: Period, lease_id: str, amount_micro_usd: int) -> None:
        budget = self._budget(app, period)
        held = budget.holds.get(lease_id)
        if held is not None and held[0] > amount_micro_usd:
            budget.reserved -= held[0] - amount_micro_usd
            budget.holds[lease_id] = (amount_micro_usd, held[1])

    async def renew(
        self, app: str, period: Period, lease_ids: Sequence[str], lease_ms: int
    ) -> list[str]:
        budget = self._budget(app, period)
        expiry = self._now_ms() + lease_ms
        gone = []
        for lease in lease_ids:
            held = budget.holds.get(lease)
            if held is None:
                gone.append(lease)
            else:
                budget.holds[lease] = (held[0], expiry)
        return gone

    async def add_spent(
        self,
        app: str,
        period: Period,
        *,
        charge_id: str,
        amount_micro_usd: int,
        default: BudgetLimit,
    ) -> BudgetUsage:
        budget = self._budget(app, period)
        if charge_id not in budget.charges:
            budget.charges.add(charge_id)
            budget.spent += amount_micro_usd
        return self._usage(app, budget, default)

    async def budget_usage(self, app: str, period: Period, default: BudgetLimit) -> BudgetUsage:
        return self._usage(app, self._budget(app, period), default)

    async def set_budget_limit(self, app: str, limit: BudgetLimit | None) -> None:
        if limit is None:
            self._limits.pop(app, None)
        else:
            self._limits[app] = limit

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
        take = self._buckets_of(app, requests_per_minute, tokens_per_minute)
        if not force:
            decision = take.check(requests, tokens)
            if not decision.allowed:
                return decision
        take.apply(requests, tokens)
        return RateDecision(True)

    def _buckets_of(self, app: str, rpm: int, tpm: int) -> _Take:
        now = self._now_ms()
        return _Take(
            self._bucket(app, "requests", rpm, now),
            self._bucket(app, "tokens", tpm, now),
            rpm,
            tpm,
            now,
        )

    def _bucket(self, app: str, kind: str, per_minute: int, now_ms: int) -> _Bucket | None:
        if not per_minute:
            return None
        bucket = self._buckets.get((app, kind))
        if bucket is None:
            bucket = self._buckets[(app, kind)] = _Bucket(float(per_minute), now_ms)
        return bucket

    async def cache_get(self, app: str, key: str) -> bytes | None:
        entry = self._cache.get((app, key))
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._cache[(app, key)]
            return None
        return entry[0]

    async def cache_put(self, app: str, key: str, value: bytes, ttl_s: float) -> None:
        self._cache.pop((app, key), None)
        self._cache[(app, key)] = (value, self._clock() + ttl_s)
        while len(self._cache) > _MAX_CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def mark_warm(self, app: str, prefix_hash: str, model: str, ttl_s: float) -> None:
        models = self._warm.pop((app, prefix_hash), None) or {}
        models[model] = self._clock() + ttl_s
        self._warm[(app, prefix_hash)] = models
        while len(self._warm) > _MAX_WARM_PREFIXES:
            self._warm.popitem(last=False)

    async def warm_models(self, app: str, prefix_hash: str) -> frozenset[str]:
        now = self._clock()
        models = self._warm.get((app, prefix_hash), {})
        return frozenset(model for model, expiry in models.items() if expiry > now)

    async def add_stats(self, app: str, period: Period, counts: Mapping[str, int]) -> None:
        self._stats.setdefault((app, period.name), Counter()).update(counts)

    async def read_stats(self, app: str, period: Period) -> dict[str, int]:
        return dict(self._stats.get((app, period.name), {}))

    async def aclose(self) -> None:
        self._cache.clear()
        self._warm.clear()


def _wait_s(missing: float, per_minute: int) -> float:
    return missing * 60 / per_minute


class _Take:
    """An app's request and token buckets refilled to `now_ms`: checked, then taken from (a
    limit of 0 leaves its bucket untouched)."""

    def __init__(
        self, requests: _Bucket | None, tokens: _Bucket | None, rpm: int, tpm: int, now_ms: int
    ) -> None:
        self._rpm, self._tpm, self._now = rpm, tpm, now_ms
        self._requests, self._tokens = requests, tokens
        self._level_r = self._requests.refilled(rpm, now_ms) if self._requests else 0.0
        self._level_t = self._tokens.refilled(tpm, now_ms) if self._tokens else 0.0

    def check(self, requests: int, tokens: int) -> RateDecision:
        if self._requests and self._level_r < requests:
            return RateDecision(False, "requests", _wait_s(requests - self._level_r, self._rpm))
        # A request larger than the whole bucket passes when the bucket is full.
        wanted = min(tokens, self._tpm)
        if self._tokens and self._level_t < wanted:
            return RateDecision(False, "tokens", _wait_s(wanted - self._level_t, self._tpm))
        return RateDecision(True)

    def apply(self, requests: int, tokens: int) -> None:
        """Take, whatever the buckets hold; the token bucket goes at most a minute into debt."""
        if self._requests:
            self._requests.level, self._requests.at_ms = self._level_r - requests, self._now
        if self._tokens:
            self._tokens.level = max(self._level_t - tokens, -float(self._tpm))
            self._tokens.at_ms = self._now
