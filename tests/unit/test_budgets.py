"""Budget rules: periods, states, the ledger's refusals, settles, alerts and lease renewal,
and reserve/settle sequences against a model of what the spend must be."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_service import alerts, budgets
from router_service.auth import App
from router_service.budgets import BudgetLedger, budget_state, configured_limit, period_of
from router_service.config import AppConfig, BudgetConfig
from router_service.errors import BudgetExhausted, StoreUnavailable
from router_service.policy import BudgetState
from router_service.store import (
    BudgetLimit,
    BudgetUsage,
    MemoryStore,
    ReserveResult,
    SettleResult,
)
from tests.support.waiting import eventually

KEY = "0" * 64


def app(limit_usd: str | None = "1", soft: float = 0.8, name: str = "a") -> App:
    budget = (
        None
        if limit_usd is None
        else BudgetConfig(monthly_limit_usd=Decimal(limit_usd), soft_threshold=soft)
    )
    return App(name=name, config=AppConfig(key_sha256=KEY, budget=budget), tasks={})


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_periods_are_utc_calendar_months() -> None:
    assert period_of(ts(2026, 11, 30, 23, 59, 59)).name == "2026-11"
    assert period_of(ts(2026, 12, 1)).name == "2026-12"
    december = period_of(ts(2026, 12, 31, 23, 59))
    assert december.name == "2026-12"
    # Kept five weeks past the month's end, then it expires.
    assert december.expire_at == ts(2027, 1, 1) + 35 * 86400


def test_state_follows_spend_against_limit() -> None:
    def state(spent: int, limit: int | None) -> BudgetState:
        return budget_state(BudgetUsage(spent, 0, BudgetLimit(limit, 0.8)))

    assert state(799, 1000) is BudgetState.OK
    assert state(800, 1000) is BudgetState.SOFT
    assert state(1000, 1000) is BudgetState.EXHAUSTED
    assert state(10**9, None) is BudgetState.OK


def test_configured_limit_is_in_micro_dollars() -> None:
    assert configured_limit(app("1.25", 0.5).config) == BudgetLimit(1_250_000, 0.5)
    assert configured_limit(app(None).config) == BudgetLimit(None)


async def test_refusal_says_why_and_holds_nothing() -> None:
    ledger = BudgetLedger(MemoryStore(), lease_s=60)
    await ledger.reserve(app(), 900_000)
    with pytest.raises(BudgetExhausted) as refused:
        await ledger.reserve(app(), 200_000)
    assert refused.value.subject == "app:a"
    assert "monthly budget" in refused.value.description
    assert "$0.900000 held" in refused.value.message and "up to $0.200000" in refused.value.message
    snapshot = await ledger.read("a", app().config)
    assert snapshot.usage.reserved_micro_usd == 900_000
    await ledger.aclose()


async def test_settle_records_the_actual_cost_and_alerts_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = BudgetLedger(MemoryStore(), lease_s=60)
    before = alerts.COUNTS["budget_soft_threshold_crossed"]
    with caplog.at_level(logging.WARNING, logger="router_service.alerts"):
        for _ in range(3):
            hold = await ledger.reserve(app(), 400_000)
            await ledger.settle(hold, 300_000)
            await ledger.settle(hold, 300_000)  # a second settle of the same hold is ignored
    snapshot = await ledger.read("a", app().config)
    assert snapshot.usage.spent_micro_usd == 900_000 and snapshot.usage.reserved_micro_usd == 0
    assert snapshot.state is BudgetState.SOFT
    assert alerts.COUNTS["budget_soft_threshold_crossed"] == before + 1
    assert "app a has spent 90.0%" in caplog.text and "soft threshold 80%" in caplog.text
    await ledger.aclose()


async def test_a_cost_beyond_the_hold_is_recorded_and_reported() -> None:
    ledger = BudgetLedger(MemoryStore(), lease_s=60)
    before = alerts.COUNTS["reservation_shortfall"]
    hold = await ledger.reserve(app(None), 10)
    await ledger.settle(hold, 25)
    assert (await ledger.read("a", app(None).config)).usage.spent_micro_usd == 25
    assert alerts.COUNTS["reservation_shortfall"] == before + 1
    await ledger.aclose()


async def test_live_holds_are_renewed_past_their_lease() -> None:
    ledger = BudgetLedger(MemoryStore(), lease_s=0.15)
    lost = alerts.COUNTS["lease_lost"]
    hold = await ledger.reserve(app(), 500_000)
    await asyncio.sleep(0.5)
    assert (await ledger.read("a", app().config)).usage.reserved_micro_usd == 500_000
    await ledger.settle(hold, 1)
    assert ledger.open_holds == 0
    assert alerts.COUNTS["lease_lost"] == lost
    await ledger.aclose()


async def test_a_stopped_ledgers_holds_expire() -> None:
    store = MemoryStore()
    dead = BudgetLedger(store, lease_s=0.1)
    await dead.reserve(app(), 900_000)
    await dead.aclose()  # the replica dies: nobody renews
    await asyncio.sleep(0.15)
    live = BudgetLedger(store, lease_s=60)
    assert (await live.read("a", app().config)).usage.reserved_micro_usd == 0
    await live.reserve(app(), 900_000)
    await live.aclose()


class FlakyStore(MemoryStore):
    """A store whose next `failures` settles fail as if Redis were unreachable, and whose
    reserves wait for `gate` when one is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.gate: asyncio.Event | None = None
        self.granted = 0

    async def settle(self, *args: Any, **kwargs: Any) -> SettleResult:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("unreachable")
        return await super().settle(*args, **kwargs)

    async def reserve(self, *args: Any, **kwargs: Any) -> ReserveResult:
        # Like a command already sent to Redis: it runs whether or not the caller waits.
        return await asyncio.shield(asyncio.ensure_future(self._reserve(*args, **kwargs)))

    async def _reserve(self, *args: Any, **kwargs: Any) -> ReserveResult:
        if self.gate is not None:
            await self.gate.wait()
        result = await super().reserve(*args, **kwargs)
        self.granted += result.granted
        return result


async def test_a_settle_the_store_cannot_take_is_retried_until_it_lands() -> None:
    store = FlakyStore()
    ledger = BudgetLedger(store, lease_s=60)
    hold = await ledger.reserve(app(), 600_000)
    store.failures = 3
    await ledger.settle(hold, 250_000)  # returns at once; queued
    assert ledger.unsettled == 1 and ledger.open_holds == 1  # the hold stays renewed
    await eventually(lambda: not ledger.unsettled)
    usage = (await ledger.read("a", app().config)).usage
    assert usage.spent_micro_usd == 250_000 and usage.reserved_micro_usd == 0
    assert ledger.open_holds == 0
    await ledger.aclose()


async def test_settles_still_queued_at_shutdown_are_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    ledger = BudgetLedger(store, lease_s=60)
    hold = await ledger.reserve(app(), 600_000)
    store.failures = 10**6
    await ledger.settle(hold, 250_000)
    failed = alerts.COUNTS["settle_failed"]
    with caplog.at_level(logging.ERROR, logger="router_service.alerts"):
        await ledger.aclose(settle_for_s=0.3)
    assert alerts.COUNTS["settle_failed"] == failed + 1
    assert "250000 micro-USD was never recorded" in caplog.text


async def test_settles_queued_at_shutdown_are_tried_at_once_not_after_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a long outage the retrier sleeps up to 5 s between tries; a replica stopped in
    that sleep (the store back meanwhile) must still send its queued settles within the
    shutdown's `settle_for_s`, not report their cost as never recorded."""
    monkeypatch.setattr(budgets, "_FIRST_RETRY_S", 0.05)
    store = FlakyStore()
    ledger = BudgetLedger(store, lease_s=60)
    hold = await ledger.reserve(app(), 600_000)
    store.failures = 5  # the first try and four retries: then the retrier sleeps 0.8 s
    await ledger.settle(hold, 250_000)
    await eventually(lambda: store.failures == 0)
    failed = alerts.COUNTS["settle_failed"]
    await ledger.aclose(settle_for_s=0.3)
    assert alerts.COUNTS["settle_failed"] == failed
    usage = await store.budget_usage("a", hold.period, hold.default)
    assert (usage.spent_micro_usd, usage.reserved_micro_usd) == (250_000, 0)


async def test_a_reserve_whose_caller_left_is_released_once_granted() -> None:
    store = FlakyStore()
    store.gate = asyncio.Event()
    ledger = BudgetLedger(store, lease_s=60, release_after_s=0.05)
    caller = asyncio.create_task(ledger.reserve(app(), 600_000))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    store.gate.set()  # the store grants the hold after the caller has gone

    async def released() -> bool:
        usage = (await ledger.read("a", app().config)).usage
        return store.granted == 1 and usage.reserved_micro_usd == 0

    await eventually(released)
    store.gate = None
    assert (await ledger.reserve(app(), 1_000_000)).amount_micro_usd == 1_000_000
    await ledger.aclose()


operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 400)),
        st.tuples(st.just("settle"), st.integers(0, 30), st.floats(0, 1)),
        st.tuples(st.just("limit"), st.integers(0, 1500)),
        st.tuples(st.just("replay"), st.integers(0, 60)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(operations)
async def test_reserve_settle_sequences_never_overspend(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    """Against a model: spent is the sum of settled costs, reserved the sum of open holds, and
    while the limit is unchanged, spent + reserved never passes it."""
    store, limit = MemoryStore(), BudgetLimit(1000)
    period = period_of(ts(2026, 11, 5))
    open_holds: dict[str, int] = {}
    # Every store call made so far, to send again as a retry after a lost reply would.
    sent: list[tuple[str, str, int]] = []
    spent = 0
    lowered = False
    for i, op in enumerate(ops):
        if op[0] == "replay" and sent:
            kind, lease, amount = sent[op[1] % len(sent)]
            # A reserve is retried only before it returns, so never after its settle.
            if kind == "reserve" and lease in open_holds:
                await store.reserve(
                    "a", period, lease_id=lease, amount_micro_usd=amount, lease_ms=60_000,
                    default=limit,
                )  # fmt: skip
            elif kind == "settle":
                await store.settle(
                    "a", period, lease_id=lease, actual_micro_usd=amount, default=limit
                )
        if op[0] == "reserve":
            fits = (
                spent + sum(open_holds.values()) + op[1]
                <= (await store.budget_usage("a", period, limit)).limit.limit_micro_usd
            )
            result = await store.reserve(
                "a", period, lease_id=str(i), amount_micro_usd=op[1], lease_ms=60_000, default=limit
            )
            assert result.granted == fits
            if fits:
                open_holds[str(i)] = op[1]
                sent.append(("reserve", str(i), op[1]))
        elif op[0] == "settle" and open_holds:
            lease = sorted(open_holds)[op[1] % len(open_holds)]
            amount = open_holds.pop(lease)
            actual = int(amount * op[2])
            spent += actual
            result = await store.settle(
                "a", period, lease_id=lease, actual_micro_usd=actual, default=limit
            )
            assert result.lease_found and not result.replayed
            sent.append(("settle", lease, actual))
        elif op[0] == "limit":
            await store.set_budget_limit("a", BudgetLimit(op[1]))
            lowered = True
        usage = await store.budget_usage("a", period, limit)
        assert usage.spent_micro_usd == spent
        assert usage.reserved_micro_usd == sum(open_holds.values())
        if not lowered:
            assert usage.spent_micro_usd + usage.reserved_micro_usd <= 1000


@given(st.lists(st.integers(0, 4_000_000_000), min_size=1, max_size=20))
def test_period_of_agrees_with_the_calendar_in_any_order(times: list[int]) -> None:
    # period_of keeps the last month it computed; jumping around must never reuse it wrongly.
    for t in times:
        moment = datetime.fromtimestamp(t, UTC)
        assert period_of(t).name == moment.strftime("%Y-%m")
