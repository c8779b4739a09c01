"""Budgets, rate limits, caches and statistics for the request path, over one store.

The composition root builds one `Accounting` from the store config and the shared Redis client
(`Accounting.build`) and hands it to the pipeline, the Admin service and the call observers. It
admits calls (`admission`: rate limits and the budget hold, one round trip) and owns the work
each call leaves behind (settling its cost and charging its output tokens, one round trip;
caching its answer, marking its prefix warm): that work runs as tracked background tasks, so a
caller who cancels cannot interrupt it, and `aclose` waits for all of it before the process
stops.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from router_service.admission import Admissions
from router_service.affinity import PrefixWarmth
from router_service.auth import App
from router_service.budgets import BudgetLedger, Hold
from router_service.config import StoreConfig
from router_service.errors import StoreUnavailable
from router_service.ratelimit import RateLimiter
from router_service.response_cache import CachedAnswer, ResponseCache
from router_service.stats import StatsRecorder
from router_service.store import MemoryStore, RedisClient, Store, build_store
from router_service.telemetry.attributes import SPAN_BUDGET_SETTLE
from router_service.telemetry.tracing import NO_TRACE, CallTrace

__all__ = ["Accounting", "AfterCall"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AfterCall:
    """What a finished call leaves for the store."""

    app: App
    hold: Hold | None
    cost_micro_usd: int
    output_tokens: int
    # Where to cache a complete answer, when the request was eligible.
    cache: tuple[str, CachedAnswer] | None = None
    # (prefix hash, model) now warm in the model's provider cache.
    warm: tuple[str, str] | None = None
    # The call's trace, for the budget.settle span.
    trace: CallTrace = NO_TRACE


class Accounting:
    def __init__(self, store: Store, config: StoreConfig) -> None:
        self.store = store
        self.budgets = BudgetLedger(
            store,
            lease_s=config.reservation_lease_s,
            release_after_s=2 * config.operation_timeout_s,
        )
        self.rate_limits = RateLimiter(store)
        self.admissions = Admissions(store, self.budgets, self.rate_limits)
        self.responses = ResponseCache(store, ttl_s=config.response_cache_ttl_s)
        self.warmth = PrefixWarmth(store, ttl_s=config.prefix_warm_ttl_s)
        self.stats = StatsRecorder(store, flush_interval_s=config.stats_flush_interval_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def build(cls, config: StoreConfig, redis: RedisClient | None) -> Accounting:
        return cls(build_store(config, redis), config)

    @classmethod
    def in_memory(cls) -> Accounting:
        return cls(MemoryStore(), StoreConfig())

    def after_call(self, work: AfterCall) -> None:
        """Record what a call leaves behind, in the background; never raises."""
        if self._closed:
            # Nothing may reach a closed store; the hold's lease releases it.
            log.error("app %s: call finished after shutdown; not settled", work.app.name)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Only when a generator is finalized outside its loop; the lease releases the hold.
            log.error("app %s: call finished outside the event loop; not settled", work.app.name)
            return
        task = loop.create_task(self._finish(work), name="after-call")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, work: AfterCall) -> None:
        app = work.app
        charged = False
        if work.hold is not None:
            charge = self.rate_limits.output_charge(app, work.output_tokens)
            with work.trace.span(SPAN_BUDGET_SETTLE):
                charged = await self.budgets.settle(work.hold, work.cost_micro_usd, charge=charge)
        try:
            if not charged:
                await self.rate_limits.charge_output(app, work.output_tokens)
            if work.cache is not None:
                await self.responses.put(app.name, *work.cache)
            if work.warm is not None:
                await self.warmth.mark_warm(app.name, *work.warm)
        except StoreUnavailable as exc:
            log.warning("app %s: after-call bookkeeping skipped: %s", app.name, exc.message)

    async def drain(self) -> None:
        """Wait until every finished call's bookkeeping is done."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self) -> None:
        await self.drain()
        await self.admissions.drain()
        await self.rate_limits.drain()
        self._closed = True
        await self.budgets.aclose()
        await self.stats.aclose()
        await self.store.aclose()
