"""Admissions: a rate-limit take and a budget hold sent together, then fitted to the decided
worst case (kept, asked again at the exact amount, or replaced), and given back whole; and the
after-call settle that carries the output tokens to the token bucket."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from router_service.accounting import Accounting, AfterCall
from router_service.auth import App
from router_service.config import AppConfig, BudgetConfig, RateLimitConfig, StoreConfig
from router_service.errors import BudgetExhausted, RateLimited, StoreUnavailable
from router_service.store import MemoryStore, RateDecision, SettleResult, TokenCharge
from tests.support.waiting import eventually

# $1.00 a month, two requests a minute.
APP = App(
    name="a",
    config=AppConfig(
        key_sha256="0" * 64,
        budget=BudgetConfig(monthly_limit_usd=Decimal("1")),
        rate_limits=RateLimitConfig(requests_per_minute=2),
    ),
    tasks={},
)


@pytest.fixture
async def accounting() -> Accounting:
    return Accounting(MemoryStore(), StoreConfig())


async def reserved(accounting: Accounting) -> int:
    await accounting.admissions.drain()
    await accounting.rate_limits.drain()
    return (await accounting.budgets.read(APP.name, APP.config)).usage.reserved_micro_usd


async def spent_once_settled(accounting: Accounting) -> int:
    """The spend, once every hold is settled (nothing may still be reserved)."""
    usage = (await accounting.budgets.read(APP.name, APP.config)).usage
    assert usage.reserved_micro_usd == 0
    return usage.spent_micro_usd


async def test_a_bound_that_covers_the_worst_case_is_kept(accounting: Accounting) -> None:
    # Far from the limit: the excess (1,800) is under 1% of what is left (997,000).
    hold = await accounting.admissions.begin(APP, 10, 3_000).hold_for(1_200)
    assert hold.amount_micro_usd == 3_000
    assert await reserved(accounting) == 3_000
    # The settle releases what the call did not cost.
    await accounting.budgets.settle(hold, 900)
    assert await spent_once_settled(accounting) == 900


async def test_near_the_limit_a_bound_is_lowered_to_the_worst_case(
    accounting: Accounting,
) -> None:
    # The excess (180,000) is over 1% of what is left (700,000): given back at once.
    hold = await accounting.admissions.begin(APP, 10, 300_000).hold_for(120_000)
    assert await reserved(accounting) == 120_000
    assert hold.amount_micro_usd == 120_000
    # So a call that fits beside the worst case (not beside the bound) is admitted.
    other = await accounting.admissions.begin(APP, 10, 850_000).hold_for(850_000)
    assert await reserved(accounting) == 970_000
    await accounting.budgets.settle(hold, 90_000)
    await accounting.budgets.settle(other, 0)
    assert await spent_once_settled(accounting) == 90_000


async def test_refused_at_the_bound_but_fitting_its_worst_case_is_admitted(
    accounting: Accounting,
) -> None:
    first = await accounting.admissions.begin(APP, 10, 700_000).hold_for(700_000)
    # 300_000 left: the bound does not fit, the decided worst case does.
    hold = await accounting.admissions.begin(APP, 10, 900_000).hold_for(250_000)
    assert hold.amount_micro_usd == 250_000
    assert await reserved(accounting) == first.amount_micro_usd + 250_000
    # The refusal at the bound took no request: two were admitted, the third is refused.
    with pytest.raises(RateLimited):
        await accounting.admissions.begin(APP, 10, 1).hold_for(1)


async def test_refused_at_its_worst_case_takes_nothing(accounting: Accounting) -> None:
    await accounting.admissions.begin(APP, 10, 800_000).hold_for(800_000)
    with pytest.raises(BudgetExhausted) as refused:
        await accounting.admissions.begin(APP, 10, 900_000).hold_for(250_000)
    assert "this request may cost up to $0.250000" in refused.value.message
    assert await reserved(accounting) == 800_000
    # Its request was not taken either.
    await accounting.admissions.begin(APP, 10, 1).hold_for(1)


async def test_a_rate_refusal_takes_no_budget(accounting: Accounting) -> None:
    for _ in range(2):
        await accounting.admissions.begin(APP, 10, 100_000).hold_for(100_000)
    with pytest.raises(RateLimited) as refused:
        await accounting.admissions.begin(APP, 10, 100_000).hold_for(100_000)
    assert refused.value.description == "requests per minute: 2"
    assert await reserved(accounting) == 200_000


async def test_a_bound_below_the_worst_case_is_replaced(
    accounting: Accounting, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="router_service.admission"):
        hold = await accounting.admissions.begin(APP, 10, 100_000).hold_for(400_000)
    assert hold.amount_micro_usd == 400_000
    assert "below the decided worst case" in caplog.text
    assert await reserved(accounting) == 400_000


async def test_an_abandoned_admission_gives_everything_back(accounting: Accounting) -> None:
    # Abandoned before the store has even answered: given back once it has.
    accounting.admissions.begin(APP, 10, 600_000).abandon()
    assert await reserved(accounting) == 0
    # And the request it took: two more are admitted.
    for _ in range(2):
        await accounting.admissions.begin(APP, 10, 100_000).hold_for(100_000)


async def test_without_rate_limits_only_the_budget_is_asked() -> None:
    class BudgetOnly(MemoryStore):
        async def admit(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            raise AssertionError("the combined script was sent")

    accounting = Accounting(BudgetOnly(), StoreConfig())
    unlimited = App(name="a", config=AppConfig(key_sha256="0" * 64), tasks={})
    hold = await accounting.admissions.begin(unlimited, 10, 10**9).hold_for(10)
    assert hold.amount_micro_usd == 10**9


class Counting(MemoryStore):
    """Counts the store's round trips of the after-call path; settles fail while `down`."""

    def __init__(self) -> None:
        super().__init__()
        self.settles: list[TokenCharge | None] = []
        self.takes = 0
        self.down = False

    async def settle(self, *args: Any, **kwargs: Any) -> SettleResult:
        self.settles.append(kwargs.get("charge"))
        if self.down:
            raise StoreUnavailable("unreachable")
        return await super().settle(*args, **kwargs)

    async def take(self, *args: Any, **kwargs: Any) -> RateDecision:
        self.takes += 1
        return await super().take(*args, **kwargs)


TOKENS_APP = App(
    name="a",
    config=AppConfig(key_sha256="0" * 64, rate_limits=RateLimitConfig(tokens_per_minute=6_000)),
    tasks={},
)


async def test_the_settle_carries_the_output_tokens_in_one_round_trip() -> None:
    store = Counting()
    accounting = Accounting(store, StoreConfig())
    hold = await accounting.admissions.begin(TOKENS_APP, 1_000, 500).hold_for(500)
    accounting.after_call(AfterCall(TOKENS_APP, hold, 200, output_tokens=5_000))
    await accounting.drain()
    assert store.settles == [TokenCharge(tokens_per_minute=6_000, tokens=5_000)]
    assert store.takes == 0
    # 6000 - 1000 - 5000: the bucket is empty.
    with pytest.raises(RateLimited):
        await accounting.rate_limits.admit(TOKENS_APP, 100)
    await accounting.aclose()


async def tokens_left(store: MemoryStore) -> float:
    """What the token bucket of TOKENS_APP holds now (negative: in debt), read with a refused
    take that asks for a whole minute's allowance more than it can hold."""
    decision = await store.take(
        "a", requests_per_minute=0, tokens_per_minute=6_000, requests=0, tokens=6_000
    )
    assert not decision.allowed
    return 6_000 - decision.retry_after_s * 100  # refills 100 tokens a second


async def test_a_settle_that_must_wait_takes_its_charge_with_it() -> None:
    store = Counting()
    accounting = Accounting(store, StoreConfig())
    hold = await accounting.admissions.begin(TOKENS_APP, 1_000, 500).hold_for(500)
    store.down = True
    accounting.after_call(AfterCall(TOKENS_APP, hold, 200, output_tokens=5_000))
    await accounting.drain()
    assert accounting.budgets.unsettled == 1 and store.takes == 0
    store.down = False
    await eventually(lambda: not accounting.budgets.unsettled)
    # The queued settle carries the charge: the tokens are taken once, with it.
    assert store.settles[-1] == TokenCharge(tokens_per_minute=6_000, tokens=5_000)
    assert store.takes == 0
    # 6000 - 1000 - 5000, plus what refilled since (100 a second); twice charged: -5000.
    assert 0 <= await tokens_left(store) < 1_000
    usage = (await accounting.budgets.read("a", TOKENS_APP.config)).usage
    assert usage.spent_micro_usd == 200 and usage.reserved_micro_usd == 0
    await accounting.aclose()


async def test_a_settle_whose_reply_was_lost_charges_once() -> None:
    class LostReply(Counting):
        async def settle(self, *args: Any, **kwargs: Any) -> SettleResult:
            result = await super().settle(*args, **kwargs)
            if len(self.settles) == 1:
                raise StoreUnavailable("timed out after Redis ran it")
            return result

    store = LostReply()
    accounting = Accounting(store, StoreConfig())
    hold = await accounting.admissions.begin(TOKENS_APP, 1_000, 500).hold_for(500)
    accounting.after_call(AfterCall(TOKENS_APP, hold, 200, output_tokens=5_000))
    await accounting.drain()
    await eventually(lambda: not accounting.budgets.unsettled)
    # Sent twice, applied once: a replayed settle charges nothing (5,000 more would leave the
    # bucket a minute in debt).
    assert len(store.settles) == 2 and store.takes == 0
    assert 0 <= await tokens_left(store) < 1_000
    usage = (await accounting.budgets.read("a", TOKENS_APP.config)).usage
    assert usage.spent_micro_usd == 200 and usage.reserved_micro_usd == 0
    await accounting.aclose()


async def test_a_shrink_the_store_cannot_take_leaves_the_hold_whole() -> None:
    class Down(MemoryStore):
        async def shrink(self, app: str, period: Any, lease_id: str, amount: int) -> None:
            raise StoreUnavailable("redis is down")

    accounting = Accounting(Down(), StoreConfig())
    hold = await accounting.admissions.begin(APP, 10, 300_000).hold_for(120_000)
    assert await reserved(accounting) == 300_000  # safe: the settle releases it
    assert hold.amount_micro_usd == 300_000
    await accounting.budgets.settle(hold, 100_000)
    assert await reserved(accounting) == 0
