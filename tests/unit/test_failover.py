"""What the failover store counts as an outage: connection trouble and server-state replies
mark Redis down; any other error reply is a bug, and only its operation falls back."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError, ResponseError

from router_service import alerts
from router_service.errors import StoreUnavailable
from router_service.store import (
    AdmitResult,
    BudgetLimit,
    BudgetUsage,
    FailoverStore,
    HoldRequest,
    MemoryStore,
    Period,
    RateTake,
    ReserveResult,
    SettleResult,
    TokenCharge,
)

PERIOD = Period("2026-11", expire_at=2_000_000_000)


class Failing(MemoryStore):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def cache_get(self, app: str, key: str) -> bytes | None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (ConnectionError("refused"), True),
        (ResponseError("LOADING Redis is loading the dataset in memory"), True),
        (ResponseError("READONLY You can't write against a read only replica."), True),
        (ResponseError("OOM command not allowed when used memory > 'maxmemory'."), True),
        (ResponseError("ERR Error running script: attempt to compare nil with number"), False),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
    ],
)
async def test_only_outages_mark_redis_down(error: Exception, outage: bool) -> None:
    store = FailoverStore(Failing(error), MemoryStore(), policy="fail_open", timeout_s=0.5)
    refused = alerts.COUNTS["store_refused"]
    assert await store.cache_get("a", "k") is None  # the local store answered
    assert store.available is not outage
    assert alerts.COUNTS["store_refused"] == refused + (not outage)


async def test_a_refused_operation_follows_the_policy() -> None:
    store = FailoverStore(
        Failing(ResponseError("ERR bug")), MemoryStore(), policy="fail_closed", timeout_s=0.5
    )
    with pytest.raises(StoreUnavailable):
        await store.cache_get("a", "k")
    assert store.available
    # Other operations still go to Redis (here: the primary's own budget counters).
    usage = await store.budget_usage("a", PERIOD, BudgetLimit(100))
    assert usage.limit.limit_micro_usd == 100


class Unreachable(MemoryStore):
    async def admit(self, *args: object, **kwargs: object) -> AdmitResult:  # type: ignore[override]
        raise ConnectionError("refused")

    async def settle(self, *args: object, **kwargs: object) -> SettleResult:  # type: ignore[override]
        raise ConnectionError("refused")


async def admit(store: FailoverStore, lease: str) -> AdmitResult:
    hold = HoldRequest(lease, 60, 60_000, BudgetLimit(100))
    return await store.admit("a", PERIOD, hold, RateTake(1, 0, 1, 10))


async def test_admissions_follow_the_policy_and_local_holds_settle_locally() -> None:
    local = MemoryStore()
    store = FailoverStore(Unreachable(), local, policy="fail_open", timeout_s=0.5)
    assert (await admit(store, "l1")).granted  # counted by the local store
    assert not store.available
    refused = await admit(store, "l2")
    assert not refused.fits and not refused.rate.allowed  # the local buckets and budget
    settled = await store.settle(
        "a",
        PERIOD,
        lease_id="l1",
        actual_micro_usd=30,
        default=BudgetLimit(100),
        charge=TokenCharge(tokens_per_minute=1_000, tokens=5),
    )
    assert settled.lease_found and settled.usage.spent_micro_usd == 30

    closed = FailoverStore(Unreachable(), MemoryStore(), policy="fail_closed", timeout_s=0.5)
    with pytest.raises(StoreUnavailable):
        await admit(closed, "l1")


class LosesAReply(MemoryStore):
    """Unreachable while `down`; and the first `add_spent` runs but its reply is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.lost = False

    async def reserve(self, *args: object, **kwargs: object) -> ReserveResult:  # type: ignore[override]
        if self.down:
            raise ConnectionError("refused")
        return await super().reserve(*args, **kwargs)  # type: ignore[arg-type]

    async def add_spent(self, *args: object, **kwargs: object) -> BudgetUsage:  # type: ignore[override]
        usage = await super().add_spent(*args, **kwargs)  # type: ignore[arg-type]
        if not self.lost:
            self.lost = True
            raise ConnectionError("reply lost")
        return usage


async def test_outage_spend_reaches_redis_once_even_when_a_reply_is_lost() -> None:
    now = [0.0]
    primary = LosesAReply()
    store = FailoverStore(
        primary, MemoryStore(), policy="fail_open", timeout_s=0.5, clock=lambda: now[0]
    )
    limit = BudgetLimit(1_000)

    async def spend_locally(lease: str, amount: int) -> None:
        held = await store.reserve(
            "a", PERIOD, lease_id=lease, amount_micro_usd=100, lease_ms=60_000, default=limit
        )
        assert held.granted and not store.available
        await store.settle("a", PERIOD, lease_id=lease, actual_micro_usd=amount, default=limit)

    async def come_back() -> None:
        primary.down = False
        now[0] += 10  # past the next probe
        await store.budget_usage("a", PERIOD, limit)  # the probe that finds Redis back
        await store.repayment()

    await spend_locally("l1", 30)
    await come_back()  # the repayment runs, but its reply is lost: Redis is down again
    assert store.owed_micro_usd == 30 and not store.available
    primary.down = True
    await spend_locally("l2", 20)
    assert store.owed_micro_usd == 50
    await come_back()  # the same charge again (a repeat, adding nothing), then the rest
    assert store.owed_micro_usd == 0
    assert (await primary.budget_usage("a", PERIOD, limit)).spent_micro_usd == 50


class RenewalsFail(MemoryStore):
    """Grants holds, then becomes unreachable for lease renewals."""

    async def renew(self, *args: object, **kwargs: object) -> list[str]:  # type: ignore[override]
        raise ConnectionError("refused")


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_a_hold_redis_granted_is_not_reported_lost_while_redis_is_away(
    policy: str,
) -> None:
    """Renewing a hold Redis granted is Redis's business: the local store, which never held
    it, must not answer that it is gone (that raised a false "reservations expired while
    their calls were still running" alert for every call in flight, at every fail_open
    outage). Its renewal waits for Redis, as its settle does; a hold the local store granted
    renews there."""
    store = FailoverStore(RenewalsFail(), MemoryStore(), policy=policy, timeout_s=0.5)  # type: ignore[arg-type]
    limit = BudgetLimit(1_000)

    async def reserve(lease: str) -> bool:
        result = await store.reserve(
            "a", PERIOD, lease_id=lease, amount_micro_usd=100, lease_ms=60_000, default=limit
        )
        return result.granted

    assert await reserve("r1")
    assert await store.renew("a", PERIOD, ["r1"], 60_000) == []
    assert not store.available
    if policy == "fail_open":
        assert await reserve("l1")  # locally
        assert await store.renew("a", PERIOD, ["r1", "l1"], 60_000) == []
