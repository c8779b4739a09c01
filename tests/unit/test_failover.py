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
    FailoverStore,
    HoldRequest,
    MemoryStore,
    Period,
    RateTake,
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
