"""Rate limits per app: requests and tokens per minute as token buckets."""

from __future__ import annotations

import pytest

from router_service.auth import App
from router_service.config import AppConfig, RateLimitConfig
from router_service.errors import RateLimited
from router_service.ratelimit import RateLimiter
from router_service.store import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def app(rpm: int | None = None, tpm: int | None = None) -> App:
    config = AppConfig(
        key_sha256="0" * 64,
        rate_limits=RateLimitConfig(requests_per_minute=rpm, tokens_per_minute=tpm),
    )
    return App(name="a", config=config, tasks={})


async def test_requests_per_minute_refuse_then_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(MemoryStore(clock=clock))
    limited = app(rpm=2)
    await limiter.admit(limited, 10)
    await limiter.admit(limited, 10)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit(limited, 10)
    assert refused.value.subject == "app:a"
    assert refused.value.description == "requests per minute: 2"
    assert "retry in 30 s" in refused.value.message
    clock.now += 30  # half a minute refills one request
    await limiter.admit(limited, 10)


async def test_output_tokens_put_the_bucket_into_debt() -> None:
    clock = Clock()
    limiter = RateLimiter(MemoryStore(clock=clock))
    limited = app(tpm=6000)
    await limiter.admit(limited, 1000)
    await limiter.charge_output(limited, 9000)  # 5000 left - 9000: 4000 in debt
    clock.now += 40  # +4000: back to 0
    with pytest.raises(RateLimited) as refused:
        await limiter.admit(limited, 100)
    assert refused.value.description == "tokens per minute: 6000"
    clock.now += 1  # +100
    await limiter.admit(limited, 100)


async def test_no_limits_never_touch_the_store() -> None:
    class Untouchable(MemoryStore):
        async def take(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            raise AssertionError("the store was asked")

    limiter = RateLimiter(Untouchable())
    for _ in range(100):
        await limiter.admit(app(), 10**6)
    await limiter.charge_output(app(), 10**6)
