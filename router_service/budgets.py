"""Per-app monthly budgets: reserve the worst case before a call, settle the actual cost after.

Why settled spend never exceeds the limit, under any concurrency and across replicas:

1. The reserve script (and the admission script, which takes the rate allowance with it) grants
   a hold only when `spent + reserved + hold <= limit`, atomically in the store, so
   `spent + reserved <= limit` holds after every grant.
2. A settle replaces a hold by the call's actual cost in one atomic step. The actual cost is
   never more than the hold, because the hold is at least the worst case the call can cost (a
   hold taken at a request's arrival is the dearest worst case of every model the decision
   could name, see `admission`; one taken after the decision is the decided worst case):
   - input: `tokens.measure_prompt(...).bound`, the UTF-8 byte count of everything sent plus
     chat-format overhead. Byte-level BPE tokenizers never produce more tokens than bytes, so no
     provider can bill more prompt tokens than this (the realistic ~chars/4 estimate could be
     exceeded, so it is not used here);
   - every input token at the dearest input price (uncached, cached or cache write), and every
     allowed output token (`max_output_tokens`, which providers enforce) at the output price;
   - the dearest model among the decision's candidates, so a fallback to a dearer model mid-call
     is already paid for.
   So `spent + reserved` can only shrink at settle time, and invariant 1 keeps holding. A hold
   taken at the bound may be lowered to the decided worst case (`shrink`) once that is known:
   it still covers the call, and `spent + reserved` only shrinks.
3. Holds carry a lease. A live replica renews its leases (every third of the lease time, one
   script per app); a dead replica's holds are released when their lease runs out, so they
   neither leak nor overlap with a settle (a settle whose lease is gone still records the cost,
   which only happens if a live replica stalled for a whole lease; it is counted as an alert).

4. Every budget script is idempotent per lease id (see `store.scripts`), so a settle can be
   retried until it lands: when Redis cannot be reached, the settle of a hold it granted is
   queued here, its lease kept renewed, and retried with backoff (never diverted to the local
   store, where the hold is not). A reserve the caller gave up on mid-flight is released (a
   settle of nothing) once the store has surely run it, not left to its lease.

If a provider ever bills more than the hold (it would have to bill more tokens than bytes), the
settle records the true cost, which is the bill, and `alerts.reservation_shortfall` reports it.
A limit lowered through Admin.SetBudget below what is already spent and held refuses new calls;
calls already holding their worst case finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from router_service import alerts
from router_service.auth import App
from router_service.config import AppConfig, BudgetConfig
from router_service.cost import usd_to_micro
from router_service.errors import BudgetExhausted, StoreUnavailable
from router_service.policy import BudgetState
from router_service.store import (
    AdmitResult,
    BudgetLimit,
    BudgetUsage,
    HoldRequest,
    Period,
    ReserveResult,
    Store,
    TokenCharge,
)

__all__ = [
    "BudgetLedger",
    "BudgetSnapshot",
    "Hold",
    "budget_state",
    "configured_limit",
    "period_of",
]

log = logging.getLogger(__name__)

# What the store answers when asked for a hold: a reserve's or an admission's result.
Asked = TypeVar("Asked", ReserveResult, AdmitResult)

# A month's spend is kept this long after the month ends (for reports), then expires.
_KEEP_AFTER_PERIOD_S = 35 * 24 * 3600
# Explain and routing read the budget state at most this stale; refusals never use it.
_SNAPSHOT_TTL_S = 1.0
# Queued settles are retried after this pause, doubling while the store stays away.
_FIRST_RETRY_S = 0.25
_MAX_RETRY_S = 5.0


# The month every request of the next weeks falls in: [start, end) and its Period. Every call
# asks for its period several times; the calendar arithmetic runs once a month.
_current: tuple[float, float, Period] = (0.0, 0.0, Period("", 0))


def period_of(unix_time: float) -> Period:
    """The UTC calendar month containing `unix_time`."""
    global _current  # noqa: PLW0603 - a one-entry cache of an immutable value
    start, end, period = _current
    if start <= unix_time < end:
        return period
    moment = datetime.fromtimestamp(unix_time, UTC)
    first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    next_month = datetime(year, month, 1, tzinfo=UTC)
    period = Period(
        name=f"{moment.year:04d}-{moment.month:02d}",
        expire_at=int(next_month.timestamp()) + _KEEP_AFTER_PERIOD_S,
    )
    _current = (first.timestamp(), next_month.timestamp(), period)
    return period


@functools.lru_cache(maxsize=1024)
def _limit(budget: BudgetConfig | None) -> BudgetLimit:
    if budget is None:
        return BudgetLimit(None)
    return BudgetLimit(usd_to_micro(budget.monthly_limit_usd), budget.soft_threshold)


def configured_limit(config: AppConfig) -> BudgetLimit:
    return _limit(config.budget)


def budget_state(usage: BudgetUsage) -> BudgetState:
    """OK, SOFT (spend past the soft threshold) or EXHAUSTED (spend at the limit)."""
    limit = usage.limit.limit_micro_usd
    if limit is None:
        return BudgetState.OK
    if usage.spent_micro_usd >= limit:
        return BudgetState.EXHAUSTED
    if usage.spent_micro_usd >= limit * usage.limit.soft_threshold:
        return BudgetState.SOFT
    return BudgetState.OK


def _usd(micro: int) -> str:
    return f"${micro / 1_000_000:,.6f}"


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """An app's budget for one period, as Admin.GetBudget and Explain show it."""

    app: str
    period: str
    usage: BudgetUsage

    @property
    def state(self) -> BudgetState:
        return budget_state(self.usage)

    @property
    def headroom(self) -> int | None:
        """What is left beyond spend and holds (None: no limit)."""
        limit = self.usage.limit.limit_micro_usd
        if limit is None:
            return None
        return limit - self.usage.spent_micro_usd - self.usage.reserved_micro_usd

    def fits(self, amount_micro_usd: int) -> bool:
        """Whether a hold of this size would be granted now (advisory: the store decides)."""
        headroom = self.headroom
        return headroom is None or amount_micro_usd <= headroom


@dataclass(slots=True)
class Hold:
    """A granted reservation; settle it exactly once."""

    app: str
    default: BudgetLimit
    period: Period
    lease_id: str
    amount_micro_usd: int
    settled: bool = False


class BudgetLedger:
    """Reserves, settles and renews budget holds; one per process, shared by every request."""

    def __init__(
        self,
        store: Store,
        *,
        lease_s: float,
        release_after_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        # Lease ids unique across replicas and restarts: a random prefix per ledger and a
        # counter (no system call per request, unlike uuid4).
        prefix = uuid.uuid4().hex[:16]
        self._lease_ids = (f"{prefix}{n:x}" for n in itertools.count())
        self._lease_ms = int(lease_s * 1000)
        # How long a reserve can still be running after its caller left (the store timeout).
        self._release_after_s = release_after_s
        self._clock = clock
        # app -> (read at, snapshot), refreshed by every reserve, settle and read.
        self._snapshots: dict[str, tuple[float, BudgetSnapshot]] = {}
        # lease id -> hold, for every hold this replica has not settled yet.
        self._held: dict[str, Hold] = {}
        self._keeper: asyncio.Task[None] | None = None
        # lease id -> (hold, actual cost, output-token charge): settles the store could not
        # take yet, retried.
        self._unsettled: dict[str, tuple[Hold, int, TokenCharge | None]] = {}
        self._retrier: asyncio.Task[None] | None = None
        # Set by `aclose`: the retrier stops backing off (it may be asleep for seconds).
        self._hurry = asyncio.Event()
        # Releases of reservations whose caller left before the store answered.
        self._releases: set[asyncio.Task[None]] = set()

    @property
    def open_holds(self) -> int:
        return len(self._held)

    def _remember(self, app: str, period: Period, usage: BudgetUsage) -> BudgetSnapshot:
        snapshot = BudgetSnapshot(app, period.name, usage)
        self._snapshots[app] = (time.monotonic(), snapshot)
        return snapshot

    async def snapshot(self, app: App) -> BudgetSnapshot:
        """The app's budget now, at most a second stale (for routing and Explain)."""
        cached = self._snapshots.get(app.name)
        period = period_of(self._clock())
        if cached is not None:
            read_at, snapshot = cached
            if snapshot.period == period.name and time.monotonic() - read_at < _SNAPSHOT_TTL_S:
                return snapshot
        return await self.read(app.name, app.config)

    def last_state(self, app: str) -> BudgetState:
        """The app's budget state when the store last said (OK when it has not yet)."""
        cached = self._snapshots.get(app)
        return BudgetState.OK if cached is None else cached[1].state

    async def read(self, app: str, config: AppConfig) -> BudgetSnapshot:
        """The app's budget now, read from the store."""
        period = period_of(self._clock())
        usage = await self._store.budget_usage(app, period, configured_limit(config))
        return self._remember(app, period, usage)

    async def set_limit(
        self,
        app: str,
        config: AppConfig,
        monthly_limit_usd: Decimal | None,
        soft_threshold: float,
    ) -> BudgetSnapshot:
        """Override the app's configured limit on every replica; None drops the override."""
        limit = (
            None
            if monthly_limit_usd is None
            else BudgetLimit(usd_to_micro(monthly_limit_usd), soft_threshold)
        )
        await self._store.set_budget_limit(app, limit)
        return await self.read(app, config)

    async def reserve(self, app: App, amount_micro_usd: int) -> Hold:
        """Hold `amount` of the app's budget, or raise `BudgetExhausted` (nothing is held)."""
        hold = self.prepare(app, amount_micro_usd)
        store = self._store
        result = await self.ask(
            hold,
            lambda request: store.reserve(
                hold.app,
                hold.period,
                lease_id=request.lease_id,
                amount_micro_usd=request.amount_micro_usd,
                lease_ms=request.lease_ms,
                default=request.default,
            ),
        )
        if not result.granted:
            raise self.exhausted(hold, result.usage)
        return self.keep(hold)

    # The steps of `reserve`, for a hold the store grants in a script of its own (`admission`).

    def prepare(self, app: App, amount_micro_usd: int) -> Hold:
        """A hold not yet asked for: its lease id, period and amount."""
        period = period_of(self._clock())
        default = configured_limit(app.config)
        return Hold(app.name, default, period, next(self._lease_ids), amount_micro_usd)

    async def ask(self, hold: Hold, call: Callable[[HoldRequest], Awaitable[Asked]]) -> Asked:
        """`call`: the store asked for `hold`. A caller who leaves before the store answers
        does not leak it: the store may still grant it, so it is released later."""
        request = HoldRequest(hold.lease_id, hold.amount_micro_usd, self._lease_ms, hold.default)
        try:
            result = await call(request)
        except asyncio.CancelledError:
            self.release_later(hold)
            raise
        self._remember(hold.app, hold.period, result.usage)
        return result

    def exhausted(self, hold: Hold, usage: BudgetUsage) -> BudgetExhausted:
        """The error for a hold the store refused under `usage`."""
        limit = usage.limit.limit_micro_usd or 0
        period = hold.period.name
        return BudgetExhausted(
            f"app {hold.app} has reached its {period} budget: "
            f"{_usd(usage.spent_micro_usd)} spent and {_usd(usage.reserved_micro_usd)} held "
            f"by calls in flight, of {_usd(limit)}; this request may cost up to "
            f"{_usd(hold.amount_micro_usd)}",
            subject=f"app:{hold.app}",
            description=f"monthly budget {period} of {_usd(limit)}",
        )

    def keep(self, hold: Hold) -> Hold:
        """Renew a granted hold's lease until it is settled."""
        self._held[hold.lease_id] = hold
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._renew_leases(), name="budget-lease-keeper")
        return hold

    def headroom(self, app: str) -> int | None:
        """What the app's budget had left beyond spend and holds when the store last said (None:
        no limit, or nothing heard yet)."""
        cached = self._snapshots.get(app)
        return None if cached is None else cached[1].headroom

    async def shrink(self, hold: Hold, amount_micro_usd: int) -> None:
        """Lower a hold taken at an upper bound to `amount` (the call's own worst case), giving
        the rest back to the budget. Never raises: when the store cannot take it, the hold stays
        whole until its settle, which is safe."""
        if hold.settled or amount_micro_usd >= hold.amount_micro_usd:
            return
        try:
            await self._store.shrink(hold.app, hold.period, hold.lease_id, amount_micro_usd)
        except StoreUnavailable:
            return
        hold.amount_micro_usd = min(hold.amount_micro_usd, amount_micro_usd)

    def release_later(self, hold: Hold) -> None:
        """Settles at zero a reservation whose outcome its caller never learnt, once the store
        has surely run it or given up on it; a no-op for a lease the store never held."""

        async def release() -> None:
            await asyncio.sleep(self._release_after_s)
            await self.settle(hold, 0)

        task = asyncio.get_running_loop().create_task(release(), name="budget-release")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def settle(
        self, hold: Hold, actual_micro_usd: int, *, charge: TokenCharge | None = None
    ) -> bool:
        """Replace the hold by the actual cost; with `charge`, take the call's output tokens
        from the app's token bucket in the same round trip. Never raises: when the store cannot
        take it now, the settle is queued with its charge and retried until it lands (the hold
        stays renewed). The store applies a settle and its charge once however often it is
        sent, so a retry after a lost reply charges nothing twice. False only for a hold settled
        before (its charge, if any, is not made here)."""
        if hold.settled:
            return False
        hold.settled = True
        # No longer renewed from here on: the settle releases it.
        self._held.pop(hold.lease_id, None)
        if actual_micro_usd > hold.amount_micro_usd:
            alerts.reservation_shortfall(hold.app, hold.amount_micro_usd, actual_micro_usd)
        await self._settle(hold, actual_micro_usd, charge)
        return True

    async def _settle(
        self, hold: Hold, actual_micro_usd: int, charge: TokenCharge | None = None
    ) -> bool:
        """One attempt; False (and the settle queued) when the store could not take it."""
        try:
            result = await self._store.settle(
                hold.app,
                hold.period,
                lease_id=hold.lease_id,
                actual_micro_usd=actual_micro_usd,
                default=hold.default,
                charge=charge,
            )
        except StoreUnavailable:
            if hold.lease_id not in self._unsettled:
                self._unsettled[hold.lease_id] = (hold, actual_micro_usd, charge)
                self._held[hold.lease_id] = hold
                if self._retrier is None or self._retrier.done():
                    self._retrier = asyncio.create_task(self._retry(), name="budget-settle-retry")
            return False
        if self._unsettled.pop(hold.lease_id, None) is not None:
            self._held.pop(hold.lease_id, None)
        if result.replayed:
            return True
        if not result.lease_found:
            alerts.lease_lost(hold.app, 1)
        self._remember(hold.app, hold.period, result.usage)
        if result.crossed_soft:
            limit = result.usage.limit
            assert limit.limit_micro_usd
            alerts.budget_soft_threshold_crossed(
                hold.app,
                hold.period.name,
                result.usage.spent_micro_usd / limit.limit_micro_usd,
                limit.soft_threshold,
            )
        return True

    async def _retry(self) -> None:
        """Retries queued settles, oldest first, backing off while the store stays away."""
        delay = _FIRST_RETRY_S
        while self._unsettled:
            await self._pause(delay)
            for hold, actual, charge in list(self._unsettled.values()):
                if not await self._settle(hold, actual, charge):
                    delay = min(2 * delay, _MAX_RETRY_S)
                    break
            else:
                delay = _FIRST_RETRY_S

    async def _pause(self, delay: float) -> None:
        """Sleeps `delay` before the next retry; once `aclose` hurries the retries, they
        come at once, then at the first pace."""
        if self._hurry.is_set():
            await asyncio.sleep(min(delay, _FIRST_RETRY_S))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), delay)

    @property
    def unsettled(self) -> int:
        """Settles queued until the store can take them."""
        return len(self._unsettled)

    async def _renew_leases(self) -> None:
        """Extends this replica's leases while it lives; stops when a round finds nothing
        held (not before its first round: under steady traffic it runs on, never restarted
        per call)."""
        interval = self._lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            if not self._held:
                return
            groups: defaultdict[tuple[str, Period], list[str]] = defaultdict(list)
            for hold in self._held.values():
                groups[(hold.app, hold.period)].append(hold.lease_id)
            for (app, period), leases in groups.items():
                try:
                    gone = await self._store.renew(app, period, leases, self._lease_ms)
                except StoreUnavailable:
                    continue
                # A hold whose settle began (or landed unseen) meanwhile is not lost.
                lost = sum(
                    1 for lease in gone if lease in self._held and lease not in self._unsettled
                )
                if lost:
                    alerts.lease_lost(app, lost)

    async def aclose(self, *, settle_for_s: float = 2.0) -> None:
        """Stops renewing; gives queued settles `settle_for_s` more to land, then reports
        those that could not (their holds end with their leases; their cost is not counted)."""
        if self._releases:
            await asyncio.wait(list(self._releases))
        if self._unsettled:
            # The retrier may be asleep in a backoff longer than the time left: wake it.
            self._hurry.set()
            if self._retrier is None or self._retrier.done():
                self._retrier = asyncio.create_task(self._retry(), name="budget-settle-retry")
            await asyncio.wait([self._retrier], timeout=settle_for_s)
        for task in (self._keeper, self._retrier):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        self._keeper = self._retrier = None
        for hold, actual, _ in self._unsettled.values():
            alerts.settle_failed(hold.app, actual, StoreUnavailable("the store never came back"))
        self._unsettled.clear()
