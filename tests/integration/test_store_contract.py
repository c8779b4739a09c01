"""The store contract, run against the in-process store and a real Redis alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from router_service.store import (
    AdmitResult,
    BudgetLimit,
    HoldRequest,
    Period,
    RateTake,
    ReserveResult,
    SettleResult,
    Store,
    TokenCharge,
)
from tests.support.stores import any_store, redis_store

pytestmark = pytest.mark.integration

PERIOD = Period("2026-11", expire_at=2_000_000_000)
LIMIT = BudgetLimit(1_000, 0.8)
LEASE_MS = 60_000


async def reserve(
    store: Store,
    lease: str,
    amount: int,
    *,
    app: str = "a",
    period: Period = PERIOD,
    lease_ms: int = LEASE_MS,
    limit: BudgetLimit = LIMIT,
) -> ReserveResult:
    return await store.reserve(
        app, period, lease_id=lease, amount_micro_usd=amount, lease_ms=lease_ms, default=limit
    )


async def settle(
    store: Store, lease: str, actual: int, *, period: Period = PERIOD, limit: BudgetLimit = LIMIT
) -> SettleResult:
    return await store.settle("a", period, lease_id=lease, actual_micro_usd=actual, default=limit)


async def admit(
    store: Store,
    lease: str,
    amount: int,
    *,
    rpm: int = 0,
    tpm: int = 0,
    tokens: int = 10,
    limit: BudgetLimit = LIMIT,
) -> AdmitResult:
    hold = HoldRequest(lease, amount, LEASE_MS, limit)
    return await store.admit("a", PERIOD, hold, RateTake(rpm, tpm, 1, tokens))


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_url_fixture: str) -> AsyncIterator[Store]:
    async with any_store(request.param, redis_url_fixture) as store:
        yield store


async def test_reserve_refuses_what_would_pass_the_limit(store: Store) -> None:
    first = await reserve(store, "l1", 600)
    assert first.granted and first.usage.reserved_micro_usd == 600
    second = await reserve(store, "l2", 401)
    assert not second.granted
    assert second.usage.reserved_micro_usd == 600 and second.usage.spent_micro_usd == 0
    third = await reserve(store, "l3", 400)
    assert third.granted and third.usage.reserved_micro_usd == 1_000


async def test_settle_moves_the_actual_cost_from_reserved_to_spent(store: Store) -> None:
    await reserve(store, "l1", 600)
    settled = await settle(store, "l1", 250)
    assert settled.lease_found
    assert settled.usage.spent_micro_usd == 250 and settled.usage.reserved_micro_usd == 0
    # Released headroom is usable again: 250 spent + 750 reserved == the limit.
    assert (await reserve(store, "l2", 750)).granted
    assert not (await reserve(store, "l3", 1)).granted


async def test_expired_leases_release_their_holds(store: Store) -> None:
    await reserve(store, "dead", 900, lease_ms=50)
    assert not (await reserve(store, "l2", 200)).granted
    await asyncio.sleep(0.12)
    usage = await store.budget_usage("a", PERIOD, LIMIT)
    assert usage.reserved_micro_usd == 0
    assert (await reserve(store, "l2", 200)).granted
    # A settle that arrives after its lease ran out still records the cost.
    late = await settle(store, "dead", 100)
    assert not late.lease_found and late.usage.spent_micro_usd == 100


async def test_a_reserve_run_twice_holds_once(store: Store) -> None:
    # A retry after a lost reply sends the same lease id again.
    assert (await reserve(store, "l1", 600)).granted
    again = await reserve(store, "l1", 600)
    assert again.granted and again.usage.reserved_micro_usd == 600
    assert (await reserve(store, "l2", 400)).granted


async def test_a_settle_run_twice_counts_once(store: Store) -> None:
    await reserve(store, "l1", 600)
    first = await settle(store, "l1", 250)
    assert not first.replayed
    again = await settle(store, "l1", 250)
    assert again.replayed and again.lease_found and not again.crossed_soft
    assert again.usage.spent_micro_usd == 250 and again.usage.reserved_micro_usd == 0
    # A settle for a lease this store never held changes nothing either.
    stranger = await settle(store, "never-held", 999)
    assert stranger.replayed and stranger.usage.spent_micro_usd == 250


async def test_a_late_settle_counts_once(store: Store) -> None:
    await reserve(store, "dead", 900, lease_ms=50)
    await asyncio.sleep(0.12)
    assert (await store.budget_usage("a", PERIOD, LIMIT)).reserved_micro_usd == 0
    # A reserve retried after its lease ran out does not hold again.
    assert (await reserve(store, "dead", 900)).usage.reserved_micro_usd == 0
    late = await settle(store, "dead", 100)
    assert not late.lease_found and not late.replayed
    again = await settle(store, "dead", 100)
    assert again.replayed and again.usage.spent_micro_usd == 100


async def test_renewed_leases_outlive_their_first_expiry(store: Store) -> None:
    await reserve(store, "live", 500, lease_ms=150)
    await reserve(store, "dead", 300, lease_ms=150)
    for _ in range(3):
        await asyncio.sleep(0.06)
        assert await store.renew("a", PERIOD, ["live"], 150) == []
    usage = await store.budget_usage("a", PERIOD, LIMIT)
    assert usage.reserved_micro_usd == 500
    assert await store.renew("a", PERIOD, ["dead", "live"], 150) == ["dead"]


async def test_admin_limit_overrides_the_configured_one(store: Store) -> None:
    assert not (await store.budget_usage("a", PERIOD, LIMIT)).overridden
    await store.set_budget_limit("a", BudgetLimit(5_000, 0.5))
    usage = await store.budget_usage("a", PERIOD, LIMIT)
    assert usage.overridden and usage.limit == BudgetLimit(5_000, 0.5)
    assert (await reserve(store, "l1", 4_000)).granted
    # Other apps keep their own limits.
    assert not (await reserve(store, "l1", 4_000, app="b")).granted
    # Dropped, the configured limit applies again (4,000 held of 1,000: nothing more fits).
    await store.set_budget_limit("a", None)
    usage = await store.budget_usage("a", PERIOD, LIMIT)
    assert not usage.overridden and usage.limit == LIMIT
    assert not (await reserve(store, "l2", 1)).granted


async def test_no_limit_tracks_spend_without_refusing(store: Store) -> None:
    unlimited = BudgetLimit(None)
    assert (await reserve(store, "l1", 10**12, limit=unlimited)).granted
    settled = await settle(store, "l1", 7, limit=unlimited)
    assert settled.usage.spent_micro_usd == 7 and settled.usage.limit.limit_micro_usd is None
    assert not settled.crossed_soft


async def test_soft_threshold_is_crossed_once(store: Store) -> None:
    crossings = []
    for i in range(5):
        await reserve(store, f"l{i}", 200)
        crossings.append((await settle(store, f"l{i}", 200)).crossed_soft)
    # 800 of 1000 is the 0.8 threshold: the fourth settle crosses it, no other does.
    assert crossings == [False, False, False, True, False]


async def test_periods_are_separate(store: Store) -> None:
    await reserve(store, "l1", 1_000)
    await settle(store, "l1", 1_000)
    december = Period("2026-12", expire_at=2_000_000_000)
    assert (await reserve(store, "l2", 1_000, period=december)).granted


async def test_request_bucket_refuses_past_its_capacity(store: Store) -> None:
    decisions = [
        await store.take("a", requests_per_minute=3, tokens_per_minute=0, requests=1, tokens=10)
        for _ in range(4)
    ]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    refused = decisions[-1]
    assert refused.limited_by == "requests" and 0 < refused.retry_after_s <= 20


async def test_request_bucket_refills_evenly(store: Store) -> None:
    # 600 per minute: one request back every 100 ms.
    take = dict(requests_per_minute=600, tokens_per_minute=0, requests=1, tokens=0)
    for _ in range(700):
        if not (await store.take("a", **take)).allowed:
            break
    else:
        pytest.fail("a bucket of 600 never ran dry in 700 takes")
    await asyncio.sleep(0.25)
    assert (await store.take("a", **take)).allowed


async def test_token_bucket_counts_tokens_and_debt(store: Store) -> None:
    take = dict(requests_per_minute=0, tokens_per_minute=1_000)
    assert (await store.take("a", requests=1, tokens=700, **take)).allowed
    refused = await store.take("a", requests=1, tokens=400, **take)
    assert not refused.allowed and refused.limited_by == "tokens"
    # Output tokens known only afterwards are taken by force, into debt.
    assert (await store.take("a", requests=0, tokens=900, force=True, **take)).allowed
    assert not (await store.take("a", requests=1, tokens=1, **take)).allowed


async def test_a_request_larger_than_the_bucket_passes_when_it_is_full(store: Store) -> None:
    take = dict(requests_per_minute=0, tokens_per_minute=100)
    assert (await store.take("a", requests=1, tokens=5_000, **take)).allowed


async def test_response_cache_round_trip_and_isolation(store: Store) -> None:
    await store.cache_put("a", "k", b"answer", 60)
    assert await store.cache_get("a", "k") == b"answer"
    assert await store.cache_get("b", "k") is None
    await store.cache_put("a", "short", b"x", 0.05)
    await asyncio.sleep(0.1)
    assert await store.cache_get("a", "short") is None


async def test_warm_prefixes_expire(store: Store) -> None:
    await store.mark_warm("a", "p1", "glm-5.2", 60)
    await store.mark_warm("a", "p1", "kimi-2.7", 0.05)
    await asyncio.sleep(0.1)
    assert await store.warm_models("a", "p1") == {"glm-5.2"}
    assert await store.warm_models("b", "p1") == frozenset()


async def test_stats_accumulate(store: Store) -> None:
    await store.add_stats("a", PERIOD, {"requests": 2, "model:glm-5.2": 2})
    await store.add_stats("a", PERIOD, {"requests": 1, "cost": 40})
    assert await store.read_stats("a", PERIOD) == {"requests": 3, "model:glm-5.2": 2, "cost": 40}
    assert await store.read_stats("b", PERIOD) == {}


async def test_a_token_charge_leaves_the_request_bucket_alone(store: Store) -> None:
    both = dict(requests_per_minute=2, tokens_per_minute=1_000)
    assert (await store.take("a", requests=1, tokens=10, **both)).allowed
    charged = await store.take(
        "a", requests_per_minute=0, tokens_per_minute=1_000, requests=0, tokens=50, force=True
    )
    assert charged.allowed
    assert (await store.take("a", requests=1, tokens=10, **both)).allowed
    assert not (await store.take("a", requests=1, tokens=10, **both)).allowed


async def test_spend_added_from_elsewhere_counts_once_and_past_the_limit(store: Store) -> None:
    await reserve(store, "l1", 600)
    usage = await store.add_spent(
        "a", PERIOD, charge_id="outage-1", amount_micro_usd=700, default=LIMIT
    )
    # It was spent: it counts even beyond the limit, and holds no more room.
    assert usage.spent_micro_usd == 700 and usage.reserved_micro_usd == 600
    again = await store.add_spent(
        "a", PERIOD, charge_id="outage-1", amount_micro_usd=700, default=LIMIT
    )
    assert again.spent_micro_usd == 700
    await store.add_spent("a", PERIOD, charge_id="outage-2", amount_micro_usd=5, default=LIMIT)
    assert (await store.budget_usage("a", PERIOD, LIMIT)).spent_micro_usd == 705
    assert not (await reserve(store, "l2", 1)).granted


async def test_spend_added_to_a_new_period_expires_with_it(redis_url_fixture: str) -> None:
    async with redis_store(redis_url_fixture) as (store, client, prefix):
        soon = Period("2026-12", expire_at=int(time.time()) + 3600)
        await store.add_spent("a", soon, charge_id="c1", amount_micro_usd=5, default=LIMIT)
        assert 3500 < await client.ttl(f"{prefix}:{{a}}:budget:2026-12") <= 3600


async def test_budget_keys_expire_after_their_period(redis_url_fixture: str) -> None:
    async with redis_store(redis_url_fixture) as (store, client, prefix):
        soon = Period("2026-11", expire_at=int(time.time()) + 3600)
        await reserve(store, "l1", 10, period=soon)
        await reserve(store, "l2", 10, period=soon)
        await settle(store, "l1", 5, period=soon)
        await settle(store, "l2", 5, period=soon)  # the lease zset empties and goes
        await reserve(store, "l3", 10, period=soon)  # and comes back
        for key in (f"{prefix}:{{a}}:budget:2026-11", f"{prefix}:{{a}}:leases:2026-11"):
            assert 3500 < await client.ttl(key) <= 3600, key


async def test_admit_takes_the_hold_and_the_rate_allowance_together(store: Store) -> None:
    first = await admit(store, "l1", 600, rpm=2)
    assert first.granted and first.fits and first.rate.allowed
    assert first.usage.reserved_micro_usd == 600
    assert (await admit(store, "l2", 100, rpm=2)).granted
    third = await admit(store, "l3", 100, rpm=2)
    assert not third.granted and third.fits
    assert third.rate.limited_by == "requests" and 0 < third.rate.retry_after_s <= 30
    # The holds taken settle like any other.
    assert (await settle(store, "l1", 50)).usage.reserved_micro_usd == 100


async def test_a_rate_refusal_takes_no_budget(store: Store) -> None:
    assert (await admit(store, "l1", 300, tpm=1_000, tokens=900)).granted
    refused = await admit(store, "l2", 300, tpm=1_000, tokens=500)
    assert refused.fits and not refused.rate.allowed and refused.rate.limited_by == "tokens"
    assert refused.usage.reserved_micro_usd == 300
    assert (await store.budget_usage("a", PERIOD, LIMIT)).reserved_micro_usd == 300
    # Its lease was never held: it settles as nothing.
    assert (await settle(store, "l2", 0)).replayed


async def test_a_budget_refusal_takes_no_rate_allowance(store: Store) -> None:
    assert (await admit(store, "l1", 900, rpm=2)).granted
    refused = await admit(store, "l2", 200, rpm=2)
    assert not refused.fits and refused.rate.allowed and not refused.granted
    assert refused.usage.reserved_micro_usd == 900
    # The refused admission left the request bucket's second request in place.
    assert (await admit(store, "l3", 100, rpm=2)).granted
    assert not (await admit(store, "l4", 0, rpm=2)).rate.allowed


async def test_an_admit_run_twice_takes_once(store: Store) -> None:
    assert (await admit(store, "l1", 600, rpm=2)).granted
    again = await admit(store, "l1", 600, rpm=2)
    assert again.granted and again.usage.reserved_micro_usd == 600
    # Neither the hold nor the request was taken twice.
    assert (await admit(store, "l2", 400, rpm=2)).granted


async def test_admit_without_rate_limits_is_a_reserve(store: Store) -> None:
    assert (await admit(store, "l1", 1_000, tokens=10**9)).granted
    refused = await admit(store, "l2", 1)
    assert not refused.fits and refused.rate.allowed
    unlimited = await admit(store, "l3", 10**12, limit=BudgetLimit(None))
    assert unlimited.granted


async def test_a_settle_with_a_charge_takes_the_output_tokens_once(store: Store) -> None:
    assert (await admit(store, "l1", 600, tpm=1_000, tokens=100)).granted
    charge = TokenCharge(tokens_per_minute=1_000, tokens=900)
    settled = await store.settle(
        "a", PERIOD, lease_id="l1", actual_micro_usd=250, default=LIMIT, charge=charge
    )
    assert settled.usage.spent_micro_usd == 250 and settled.usage.reserved_micro_usd == 0
    # The bucket is empty: 50 tokens take about 3 s to come back.
    refused = (await admit(store, "l2", 1, tpm=1_000, tokens=50)).rate
    assert not refused.allowed and 2 < refused.retry_after_s <= 3
    # A replayed settle charges nothing again (else 900 tokens of debt: 57 s).
    replay = await store.settle(
        "a", PERIOD, lease_id="l1", actual_micro_usd=250, default=LIMIT, charge=charge
    )
    assert replay.replayed
    refused = (await admit(store, "l3", 1, tpm=1_000, tokens=50)).rate
    assert not refused.allowed and refused.retry_after_s <= 3


async def test_a_shrunk_hold_gives_the_rest_back_once(store: Store) -> None:
    assert (await reserve(store, "l1", 600)).granted
    assert not (await reserve(store, "l2", 500)).granted  # 400 left
    await store.shrink("a", PERIOD, "l1", 200)
    await store.shrink("a", PERIOD, "l1", 200)  # a retry changes nothing
    await store.shrink("a", PERIOD, "l1", 400)  # never raised again
    usage = await store.budget_usage("a", PERIOD, LIMIT)
    assert usage.reserved_micro_usd == 200
    assert (await reserve(store, "l2", 500)).granted
    # The settle releases what is held now, and a shrink after it changes nothing.
    settled = await store.settle("a", PERIOD, lease_id="l1", actual_micro_usd=150, default=LIMIT)
    assert settled.usage.reserved_micro_usd == 500 and settled.usage.spent_micro_usd == 150
    await store.shrink("a", PERIOD, "l1", 10)
    usage = await store.budget_usage("a", PERIOD, LIMIT)
    assert usage.reserved_micro_usd == 500 and usage.spent_micro_usd == 150
