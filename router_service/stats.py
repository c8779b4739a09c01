"""Per-app statistics: calls, spend, routing mix and cache hit rates, shared by every replica.

`StatsRecorder` is a `CallObserver`: each finished call's record is added to in-memory counters
(a few dictionary updates, nothing awaited), and every `stats_flush_interval_s` the counters are
added to the store, one pipeline per app and month. Every replica adds to the same counters, so
`Admin.GetStats` shows the whole fleet.

Definitions (SPEC.md):
- prompt-cache hit rate: share of provider-served calls that had cached input tokens;
- cached input token share: cached input tokens / input tokens, over provider-served calls;
- response-cache hit rate: share of calls (refusals excluded) answered from the response cache.

Refusals (by a limit, `refused`) and requests refused as invalid (`invalid`) are counted apart
from the calls that were routed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from router_service.budgets import period_of
from router_service.errors import StoreUnavailable
from router_service.records import CallRecord, CallStatus
from router_service.store import Period, Store

__all__ = ["AppStats", "StatsRecorder"]

log = logging.getLogger(__name__)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _by(prefix: str, counts: Mapping[str, int]) -> dict[str, int]:
    return {name[len(prefix) :]: value for name, value in counts.items() if name.startswith(prefix)}


@dataclass(frozen=True, slots=True)
class AppStats:
    app: str
    period: str
    # Calls that were admitted (refusals excluded; response-cache hits included).
    requests: int
    refused: int
    # Requests refused as invalid before any decision.
    invalid: int
    spent_micro_usd: int
    requests_by_tier: Mapping[str, int]
    requests_by_model: Mapping[str, int]
    spent_micro_usd_by_task: Mapping[str, int]
    prompt_cache_hit_rate: float
    cached_input_token_share: float
    response_cache_hit_rate: float

    @classmethod
    def from_counts(cls, app: str, period: str, counts: Mapping[str, int]) -> AppStats:
        requests = counts.get("requests", 0)
        provider_calls = counts.get("provider_calls", 0)
        return cls(
            app=app,
            period=period,
            requests=requests,
            refused=counts.get("refused", 0),
            invalid=counts.get("invalid", 0),
            spent_micro_usd=counts.get("cost", 0),
            requests_by_tier=_by("tier:", counts),
            requests_by_model=_by("model:", counts),
            spent_micro_usd_by_task=_by("task_cost:", counts),
            prompt_cache_hit_rate=_share(counts.get("prompt_cache_hits", 0), provider_calls),
            cached_input_token_share=_share(
                counts.get("cached_input_tokens", 0), counts.get("input_tokens", 0)
            ),
            response_cache_hit_rate=_share(counts.get("response_cache_hits", 0), requests),
        )


def counts_of(record: CallRecord) -> Counter[str]:
    """What one call adds to its app's counters."""
    counts: Counter[str] = Counter()
    decision = record.decision
    if decision is None:
        counts["invalid"] = 1
        return counts
    if record.status == CallStatus.REFUSED:
        counts["refused"] = 1
        return counts
    counts["requests"] = 1
    if record.cost_micro_usd:
        counts["cost"] = record.cost_micro_usd
        counts[f"task_cost:{decision.task}"] = record.cost_micro_usd
    if record.served_from_cache:
        # The routing mix (by tier and by model) is where calls went upstream. A response-cache
        # hit went nowhere: no tier's model was called, and its replayed answer's model need
        # not be of the decided tier. So it is in neither mix, only in the cache hit rate; both
        # mixes count the same calls but those that failed before any model answered (in the
        # tier mix, by the decided tier, and not in the model mix).
        counts["response_cache_hits"] = 1
        return counts
    counts[f"tier:{decision.tier.value}"] = 1
    if record.model:
        counts[f"model:{record.model}"] = 1
        if record.usage.input_tokens:
            counts["provider_calls"] = 1
            counts["input_tokens"] = record.usage.input_tokens
            counts["cached_input_tokens"] = record.usage.cached_input_tokens
            counts["prompt_cache_hits"] = int(record.prompt_cache_hit)
    return counts


class StatsRecorder:
    def __init__(
        self,
        store: Store,
        *,
        flush_interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._interval_s = flush_interval_s
        self._clock = clock
        # (app, period) -> counts not yet in the store.
        self._pending: dict[tuple[str, Period], Counter[str]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def observe(self, record: CallRecord) -> None:
        period = period_of(record.started_at)
        self._pending.setdefault((record.app, period), Counter()).update(counts_of(record))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_periodically(), name="stats-flusher"
            )

    async def _flush_periodically(self) -> None:
        while self._pending:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Add every pending count to the store (kept for the next flush if it is down)."""
        async with self._lock:
            pending, self._pending = self._pending, {}
            for (app, period), counts in pending.items():
                try:
                    await self._store.add_stats(app, period, counts)
                except StoreUnavailable:
                    self._pending.setdefault((app, period), Counter()).update(counts)

    async def read(self, app: str) -> AppStats:
        """This month's statistics for `app`, this replica's latest calls included."""
        (stats,), _ = await self.read_many([app])
        return stats

    async def read_many(self, apps: Sequence[str]) -> tuple[list[AppStats], AppStats]:
        """This month's statistics for each of `apps`, and for all of them together (app "")."""
        await self.flush()
        period = period_of(self._clock())
        total: Counter[str] = Counter()
        each = []
        for app in apps:
            counts = await self._store.read_stats(app, period)
            total.update(counts)
            each.append(AppStats.from_counts(app, period.name, counts))
        return each, AppStats.from_counts("", period.name, total)

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.wait([self._flusher])
        await self.flush()
        if self._pending:
            log.warning("statistics of %d app-months could not be written", len(self._pending))
