"""Redis with a policy for when it cannot be reached.

Every operation goes to Redis with a time limit. When Redis fails (refused connection, timeout,
an error reply such as READONLY or CLUSTERDOWN) the store is marked down and the policy decides
(any other error reply, a bug rather than an outage, is logged as an error and only that
operation follows the policy; Redis stays in use):

- `fail_open`: the operation runs on an in-process `MemoryStore` instead, so the service keeps
  serving; budgets and limits are then counted per replica (each replica may spend up to the
  limit on its own until Redis returns). Local spend starts from the last spend Redis reported.
  What the calls held locally cost is added to Redis's spend once Redis is back, summed per
  app and month and sent under an id of its own, so that a retry after a lost reply adds it
  once; the month's spend then misses nothing spent during the outage, and a long outage
  costs no more memory than a sum per app. Spend still owed when the process stops (Redis
  down to the end) is logged, and is in the call log.
- `fail_closed`: `StoreUnavailable` (gRPC UNAVAILABLE) at once, without waiting on Redis again.

Two kinds of write never go to the local store, whatever the policy: the settle of a hold
Redis granted (the hold and the spend it turns into live in Redis; the ledger queues the settle
and retries it, see `budgets`), and statistics (the recorder keeps them until Redis returns).
Both raise `StoreUnavailable` instead. Nor does the renewal of a hold Redis granted: it is
skipped while Redis is away (the local store, which never held it, would call it gone).

While down, one call at a time probes Redis after a growing pause (up to 5 s); the first probe
that succeeds brings every call back to Redis. Nothing here ever blocks longer than the
operation timeout, and nothing raises anything but `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from redis.exceptions import ClusterError, RedisError, ResponseError

from router_service import alerts
from router_service.errors import StoreUnavailable
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
from router_service.store.memory import MemoryStore

__all__ = ["FailoverStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Held = TypeVar("Held", ReserveResult, AdmitResult)

_FIRST_RETRY_S = 0.25
_MAX_RETRY_S = 5.0
_UNREACHABLE = (RedisError, OSError, TimeoutError)
# Error replies that report the server's state (loading, busy, read-only replica, cluster or
# memory trouble): an outage like a refused connection. Any other error reply (`ERR ...`,
# `WRONGTYPE`) is a bug or a misconfiguration: that operation falls back, Redis stays in use.
_OUTAGE_REPLIES = frozenset(
    {"BUSY", "LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "OOM", "MISCONF",
     "NOREPLICAS"}
)  # fmt: skip


def _outage(exc: BaseException) -> bool:
    if not isinstance(exc, ResponseError) or isinstance(exc, ClusterError):
        return True
    return str(exc).split(" ", 1)[0] in _OUTAGE_REPLIES


def _adding(
    app: str, period: Period, charge_id: str, amount: int, default: BudgetLimit
) -> Callable[[Store], Awaitable[BudgetUsage]]:
    return lambda store: store.add_spent(
        app, period, charge_id=charge_id, amount_micro_usd=amount, default=default
    )


@dataclass(frozen=True, slots=True)
class _Charge:
    charge_id: str
    amount_micro_usd: int


@dataclass(slots=True)
class _Owed:
    """An app's spend of one month settled on the local store and not yet in Redis: what is
    being sent (`sealed`, resent under the same id until Redis takes it) and what came since."""

    app: str
    period: Period
    default: BudgetLimit
    open_micro_usd: int = 0
    sealed: _Charge | None = None

    def seal(self) -> _Charge:
        """The charge to send now: the one already sealed, else all that is open."""
        if self.sealed is None:
            self.sealed = _Charge(f"outage-{uuid.uuid4().hex}", self.open_micro_usd)
            self.open_micro_usd = 0
        return self.sealed

    @property
    def total_micro_usd(self) -> int:
        return self.open_micro_usd + (self.sealed.amount_micro_usd if self.sealed else 0)


class FailoverStore:
    def __init__(
        self,
        primary: Store,
        local: MemoryStore,
        *,
        policy: Literal["fail_open", "fail_closed"],
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._local = local
        self._policy = policy
        self._timeout_s = timeout_s
        self._clock = clock
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._retry_s = _FIRST_RETRY_S
        self._probing = False
        # Leases granted by the local store while Redis was down: they settle there too.
        self._local_leases: set[str] = set()
        # (app, period) -> the last spend Redis reported, to seed local counting.
        self._last_spent: dict[tuple[str, str], int] = {}
        self._seeded: set[tuple[str, str]] = set()
        # Spend settled on the local store, not yet added to Redis's, per (app, month); and the
        # task adding it.
        self._owed: dict[tuple[str, str], _Owed] = {}
        self._repaying: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """False while Redis is marked down."""
        return self._down_since is None

    async def _run(
        self, operation: str, call: Callable[[Store], Awaitable[T]], *, local: bool = True
    ) -> T:
        """`call` on Redis; when Redis is unreachable, on the local store if `local` and the
        policy allow it, else `StoreUnavailable`."""
        probe = False
        if self._down_since is not None:
            if self._probing or self._clock() < self._retry_at:
                return await self._fallback(operation, call, None, local)
            probe = self._probing = True
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await call(self._primary)
        except _UNREACHABLE as exc:
            if _outage(exc):
                self._mark_down()
            else:
                alerts.store_refused(operation, exc)
            return await self._fallback(operation, call, exc, local)
        finally:
            if probe:
                self._probing = False
        if self._down_since is not None:
            alerts.store_recovered(self._clock() - self._down_since)
            self._down_since, self._retry_s = None, _FIRST_RETRY_S
            self._seeded.clear()
            self._repay_soon()
        return result

    def _mark_down(self) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
        else:
            self._retry_s = min(self._retry_s * 2, _MAX_RETRY_S)
        self._retry_at = now + self._retry_s

    async def _fallback(
        self,
        operation: str,
        call: Callable[[Store], Awaitable[T]],
        error: BaseException | None,
        local: bool,
    ) -> T:
        policy = self._policy if local else "retry"
        alerts.store_unavailable(operation, policy, error or ConnectionError("marked down"))
        if not local:
            raise StoreUnavailable(f"the shared store (Redis) is unreachable: {operation} waits")
        if self._policy == "fail_closed":
            raise StoreUnavailable(
                "the shared store (Redis) is unreachable and the policy is fail_closed"
            )
        return await call(self._local)

    def _remember(self, app: str, period: Period, usage: BudgetUsage) -> None:
        if self._down_since is None:
            self._last_spent[(app, period.name)] = usage.spent_micro_usd

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
        return await self._holding(
            "budget reserve",
            app,
            period,
            lease_id,
            lambda store: store.reserve(
                app,
                period,
                lease_id=lease_id,
                amount_micro_usd=amount_micro_usd,
                lease_ms=lease_ms,
                default=default,
            ),
        )

    async def admit(
        self, app: str, period: Period, hold: HoldRequest, take: RateTake
    ) -> AdmitResult:
        return await self._holding(
            "admission",
            app,
            period,
            hold.lease_id,
            lambda store: store.admit(app, period, hold, take),
        )

    async def _holding(
        self,
        operation: str,
        app: str,
        period: Period,
        lease_id: str,
        call: Callable[[Store], Awaitable[Held]],
    ) -> Held:
        """`call` (a reserve or an admission) on Redis or, per the policy, locally; a hold the
        local store granted settles there too."""

        async def run(store: Store) -> tuple[Held, bool]:
            if store is self._local:
                self._seed(app, period)
            return await call(store), store is self._local

        result, local = await self._run(operation, run)
        if local:
            if result.granted:
                self._local_leases.add(lease_id)
        else:
            self._remember(app, period, result.usage)
        return result

    def _seed(self, app: str, period: Period) -> None:
        key = (app, period.name)
        if key not in self._seeded:
            self._seeded.add(key)
            self._local.seed_spent(app, period, self._last_spent.get(key, 0))

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
        def settle(store: Store) -> Awaitable[SettleResult]:
            return store.settle(
                app,
                period,
                lease_id=lease_id,
                actual_micro_usd=actual_micro_usd,
                default=default,
                charge=charge,
            )

        if lease_id in self._local_leases:
            self._local_leases.discard(lease_id)
            local = await settle(self._local)
            if not local.replayed and actual_micro_usd > 0:
                key = (app, period.name)
                owed = self._owed.get(key)
                if owed is None:
                    owed = self._owed[key] = _Owed(app, period, default)
                owed.open_micro_usd += actual_micro_usd
                self._repay_soon()
            return local
        result = await self._run("budget settle", settle, local=False)
        self._remember(app, period, result.usage)
        return result

    def _repay_soon(self) -> None:
        """Start adding the spend settled locally to Redis's, when Redis is up and that is not
        already under way."""
        if not self._owed or self._down_since is not None:
            return
        if self._repaying is None or self._repaying.done():
            self._repaying = asyncio.get_running_loop().create_task(
                self._repay(), name="budget-repay"
            )

    async def _repay(self) -> None:
        """Add the locally settled spend to Redis, a sum per app and month at a time, each sum
        under an id of its own (a retry after a lost reply sends the same id, which adds
        nothing); stops when Redis goes away again, to go on when it is back."""
        repaid: dict[str, int] = {}
        while self._owed and self._down_since is None:
            key, owed = next(iter(self._owed.items()))
            charge = owed.seal()
            try:
                await self.add_spent(
                    owed.app,
                    owed.period,
                    charge_id=charge.charge_id,
                    amount_micro_usd=charge.amount_micro_usd,
                    default=owed.default,
                )
            except StoreUnavailable:
                break
            owed.sealed = None
            if not owed.open_micro_usd:
                del self._owed[key]
            repaid[owed.app] = repaid.get(owed.app, 0) + charge.amount_micro_usd
        for app, amount in repaid.items():
            log.info(
                "app %s: %d micro-USD spent while Redis was unreachable added to its shared spend",
                app,
                amount,
            )

    async def repayment(self, timeout_s: float | None = None) -> None:
        """Wait (at most `timeout_s`) for the repayment under way, if one is."""
        if self._repaying is not None and not self._repaying.done():
            await asyncio.wait([self._repaying], timeout=timeout_s)

    @property
    def owed_micro_usd(self) -> int:
        """Spend settled on the local store not yet added to Redis's."""
        return sum(owed.total_micro_usd for owed in self._owed.values())

    async def shrink(self, app: str, period: Period, lease_id: str, amount_micro_usd: int) -> None:
        if lease_id in self._local_leases:
            await self._local.shrink(app, period, lease_id, amount_micro_usd)
            return
        # A hold Redis granted lives there; if Redis cannot take this now, the hold stays
        # whole until its settle, which is safe.
        await self._run(
            "budget shrink",
            lambda store: store.shrink(app, period, lease_id, amount_micro_usd),
            local=False,
        )

    async def renew(
        self, app: str, period: Period, lease_ids: Sequence[str], lease_ms: int
    ) -> list[str]:
        """The holds the local store granted renew there; those Redis granted, only in Redis
        (the local store never held them, and would call every one gone). While Redis is away
        they are not renewed and none is reported gone; the first renewal that reaches Redis
        again extends them, or finds those whose lease ran out meanwhile gone."""
        local = [lease for lease in lease_ids if lease in self._local_leases]
        shared = [lease for lease in lease_ids if lease not in self._local_leases]
        gone = await self._local.renew(app, period, local, lease_ms) if local else []
        if shared:
            with contextlib.suppress(StoreUnavailable):
                gone += await self._run(
                    "lease renewal",
                    lambda store: store.renew(app, period, shared, lease_ms),
                    local=False,
                )
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
        # Spend from elsewhere belongs in the shared counters: it waits for Redis.
        adding = _adding(app, period, charge_id, amount_micro_usd, default)
        usage = await self._run("budget repay", adding, local=False)
        self._remember(app, period, usage)
        return usage

    async def budget_usage(self, app: str, period: Period, default: BudgetLimit) -> BudgetUsage:
        usage = await self._run(
            "budget read", lambda store: store.budget_usage(app, period, default)
        )
        self._remember(app, period, usage)
        return usage

    async def set_budget_limit(self, app: str, limit: BudgetLimit | None) -> None:
        # Both, so the limit holds locally too if Redis goes away later.
        await self._local.set_budget_limit(app, limit)
        await self._run("budget update", lambda store: store.set_budget_limit(app, limit))

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
        return await self._run(
            "rate limit",
            lambda store: store.take(
                app,
                requests_per_minute=requests_per_minute,
                tokens_per_minute=tokens_per_minute,
                requests=requests,
                tokens=tokens,
                force=force,
            ),
        )

    async def cache_get(self, app: str, key: str) -> bytes | None:
        return await self._run("response cache read", lambda store: store.cache_get(app, key))

    async def cache_put(self, app: str, key: str, value: bytes, ttl_s: float) -> None:
        await self._run(
            "response cache write", lambda store: store.cache_put(app, key, value, ttl_s)
        )

    async def mark_warm(self, app: str, prefix_hash: str, model: str, ttl_s: float) -> None:
        await self._run(
            "prefix record", lambda store: store.mark_warm(app, prefix_hash, model, ttl_s)
        )

    async def warm_models(self, app: str, prefix_hash: str) -> frozenset[str]:
        return await self._run("prefix lookup", lambda store: store.warm_models(app, prefix_hash))

    async def add_stats(self, app: str, period: Period, counts: Mapping[str, int]) -> None:
        await self._run(
            "statistics write", lambda store: store.add_stats(app, period, counts), local=False
        )

    async def read_stats(self, app: str, period: Period) -> dict[str, int]:
        return await self._run("statistics read", lambda store: store.read_stats(app, period))

    async def aclose(self) -> None:
        # Bounded: every store operation has its time limit, and the repayment stops at the
        # first failure.
        await self.repayment(self._timeout_s * 4)
        if self._repaying is not None:
            self._repaying.cancel()
        if self._owed:
            owed: dict[str, int] = {}
            for debt in self._owed.values():
                owed[debt.app] = owed.get(debt.app, 0) + debt.total_micro_usd
            log.error(
                "spend settled while Redis was unreachable and not yet added to Redis's is lost "
                "from the shared budgets (the call log has every call's cost): %s",
                ", ".join(f"app {app} {amount} micro-USD" for app, amount in sorted(owed.items())),
            )
        await self._local.aclose()
        await self._primary.aclose()
