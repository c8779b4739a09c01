"""What the router keeps in its store, and the interface both stores implement.

The store holds the state that must be shared by every replica: budget spend and reservations,
rate-limit buckets, the response cache, which prompt prefixes are warm where, and per-app
statistics. Each operation here is atomic on its own (one Lua script in Redis, one uninterrupted
stretch of Python in the in-process store), so the rules built on top (`budgets`, `ratelimit`,
`response_cache`, `affinity`, `stats`) never need a lock.

    Store                       everything below, as one object, and `admit`: a rate-limit
    │                           take and a budget hold in one step (both or neither)
    ├── BudgetStore             reserve / settle / renew leases / usage / set a limit
    ├── RateLimitStore          take from per-app token buckets
    ├── CacheStore              response cache entries and warm-prefix records
    └── StatsStore              per-app counters

Money is integer micro-dollars; times the store needs (lease expiry, bucket refill) come from
the store's own clock (Redis `TIME`), so replicas with skewed clocks still agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AdmitResult",
    "BudgetLimit",
    "BudgetStore",
    "BudgetUsage",
    "CacheStore",
    "HoldRequest",
    "Period",
    "RateDecision",
    "RateLimitStore",
    "RateTake",
    "ReserveResult",
    "SettleResult",
    "StatsStore",
    "Store",
    "TokenCharge",
]

DEFAULT_SOFT_THRESHOLD = 0.8


@dataclass(frozen=True, slots=True)
class Period:
    """A budget period (a UTC calendar month) and when its keys may be forgotten."""

    # "YYYY-MM"
    name: str
    # Unix seconds after which the period's spend and reservations expire from the store.
    expire_at: int


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    # None: no limit (spend is still tracked).
    limit_micro_usd: int | None
    soft_threshold: float = DEFAULT_SOFT_THRESHOLD


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    spent_micro_usd: int
    # Held by live reservations (expired leases are released before this is read).
    reserved_micro_usd: int
    # The limit in force: the one set through Admin.SetBudget, else the configured one.
    limit: BudgetLimit
    # True when `limit` was set through Admin.SetBudget.
    overridden: bool = False


@dataclass(frozen=True, slots=True)
class ReserveResult:
    granted: bool
    # Usage after the reservation (or, when refused, the usage that refused it).
    usage: BudgetUsage


@dataclass(frozen=True, slots=True)
class SettleResult:
    usage: BudgetUsage
    # False when the reservation was no longer held (its lease had run out).
    lease_found: bool
    # True for exactly one settle per app and period: the one whose spend crossed the soft
    # threshold, so every replica together raises the alert once.
    crossed_soft: bool
    # True when this lease had been settled before (a retried settle): nothing changed.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    # "requests" or "tokens" when refused.
    limited_by: str = ""
    retry_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class HoldRequest:
    """A budget hold to take (see `BudgetStore.reserve`)."""

    lease_id: str
    amount_micro_usd: int
    lease_ms: int
    default: BudgetLimit


@dataclass(frozen=True, slots=True)
class RateTake:
    """What one request takes from its app's rate-limit buckets (see `RateLimitStore.take`)."""

    requests_per_minute: int
    tokens_per_minute: int
    requests: int
    tokens: int


@dataclass(frozen=True, slots=True)
class AdmitResult:
    """A rate-limit take and a budget hold made together: both were taken, or neither."""

    # Whether the hold fits the budget (or its lease was granted before).
    fits: bool
    # Usage after the hold when granted, else the usage that was checked.
    usage: BudgetUsage
    # The rate-limit check (allowed when the app has no limits or the lease was granted before).
    rate: RateDecision

    @property
    def granted(self) -> bool:
        return self.fits and self.rate.allowed


@dataclass(frozen=True, slots=True)
class TokenCharge:
    """Tokens taken from an app's token bucket whatever it holds (into debt if need be): a
    call's output tokens, known only once it has ended."""

    tokens_per_minute: int
    tokens: int


class BudgetStore(Protocol):
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
        """Hold `amount` under `lease_id` if spent + reserved + amount stays within the limit.

        Idempotent: a lease id the store already holds (or held) is granted again unchanged."""
        ...

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
        """Release the lease's hold and add the actual cost to the spend, in one step; with
        `charge`, in the same step take its tokens from the app's token bucket (as
        `take(..., force=True)` would).

        Idempotent: a lease settled before (a retry after a lost reply) changes nothing, and
        charges nothing."""
        ...

    async def shrink(self, app: str, period: Period, lease_id: str, amount_micro_usd: int) -> None:
        """Lower the lease's live hold to `amount`; a hold already at or below it, settled or
        run out is left alone (so a retry changes nothing)."""
        ...

    async def renew(
        self, app: str, period: Period, lease_ids: Sequence[str], lease_ms: int
    ) -> list[str]:
        """Extend live leases by `lease_ms` from now; returns those no longer held."""
        ...

    async def add_spent(
        self,
        app: str,
        period: Period,
        *,
        charge_id: str,
        amount_micro_usd: int,
        default: BudgetLimit,
    ) -> BudgetUsage:
        """Add spend settled elsewhere (calls settled on a replica's local store while Redis
        was unreachable) to the period's spend, whatever the limit: it has been spent.

        Idempotent by `charge_id`: a repeat (a retry after a lost reply) changes nothing."""
        ...

    async def budget_usage(self, app: str, period: Period, default: BudgetLimit) -> BudgetUsage: ...

    async def set_budget_limit(self, app: str, limit: BudgetLimit | None) -> None:
        """Override the configured limit for every period from now on; None drops the
        override, and the configured limit applies again."""
        ...


class RateLimitStore(Protocol):
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
        """Take from the app's request and token buckets (a limit of 0 means none).

        Refused when either bucket holds too little, and then nothing is taken. `force` takes
        regardless, letting the token bucket go into debt (for usage known only afterwards).
        """
        ...


class CacheStore(Protocol):
    async def cache_get(self, app: str, key: str) -> bytes | None: ...

    async def cache_put(self, app: str, key: str, value: bytes, ttl_s: float) -> None: ...

    async def mark_warm(self, app: str, prefix_hash: str, model: str, ttl_s: float) -> None:
        """Record that `model`'s provider now holds this prompt prefix in its cache."""
        ...

    async def warm_models(self, app: str, prefix_hash: str) -> frozenset[str]: ...


class StatsStore(Protocol):
    async def add_stats(self, app: str, period: Period, counts: Mapping[str, int]) -> None: ...

    async def read_stats(self, app: str, period: Period) -> dict[str, int]: ...


class Store(BudgetStore, RateLimitStore, CacheStore, StatsStore, Protocol):
    """Everything the router keeps in its store."""

    async def admit(
        self, app: str, period: Period, hold: HoldRequest, take: RateTake
    ) -> AdmitResult:
        """`reserve` and `take` in one atomic step: both are checked, and taken only when both
        allow it (a refusal takes nothing from either). Idempotent as `reserve`: a lease id the
        store already holds (or held) is granted again, and takes nothing more."""
        ...

    async def aclose(self) -> None: ...
