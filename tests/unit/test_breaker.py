"""The per-deployment circuit breaker, on a clock the test moves."""

from __future__ import annotations

from router_service.breaker import BreakerState, CircuitBreaker, deployment_key
from router_service.catalog import Catalog
from router_service.config import CircuitBreakerConfig, load_config

KEY = "zai/glm-5.2"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, failures: int = 3) -> CircuitBreaker:
    config = CircuitBreakerConfig(failures=failures, cool_down_s=30, max_retry_after_s=120)
    return CircuitBreaker(config, clock=clock)


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failed(KEY)
    b.failed(KEY)
    b.succeeded(KEY)  # a success resets the count
    b.failed(KEY)
    b.failed(KEY)
    assert b.state(KEY) is BreakerState.CLOSED and b.acquire(KEY)
    b.failed(KEY)
    assert b.state(KEY) is BreakerState.OPEN
    assert not b.acquire(KEY) and not b.available(KEY)


def test_half_open_lets_one_probe_through() -> None:
    clock = Clock()
    b = breaker(clock, failures=1)
    b.failed(KEY)
    clock.now += 30
    assert b.state(KEY) is BreakerState.HALF_OPEN and b.available(KEY)
    assert b.acquire(KEY)  # the probe
    assert not b.acquire(KEY) and not b.available(KEY)  # everyone else waits for it
    b.succeeded(KEY)
    assert b.state(KEY) is BreakerState.CLOSED and b.acquire(KEY) and b.acquire(KEY)


def test_a_failed_probe_opens_again() -> None:
    clock = Clock()
    b = breaker(clock, failures=3)
    for _ in range(3):
        b.failed(KEY)
    clock.now += 31
    assert b.acquire(KEY)
    b.failed(KEY)  # one failure is enough now
    assert b.state(KEY) is BreakerState.OPEN
    clock.now += 29
    assert not b.acquire(KEY)
    clock.now += 2
    assert b.acquire(KEY)


def test_a_probe_without_verdict_frees_its_slot() -> None:
    clock = Clock()
    b = breaker(clock, failures=1)
    b.failed(KEY)
    clock.now += 30
    assert b.acquire(KEY)
    b.released(KEY)  # e.g. the caller cancelled
    assert b.acquire(KEY)
    # A probe that never reports at all is given up on after another cool-down.
    clock.now += 30
    assert b.acquire(KEY)


def test_rate_limit_opens_until_retry_after_capped() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failed(KEY, retry_after_s=5)
    assert b.state(KEY) is BreakerState.OPEN
    clock.now += 5
    assert b.acquire(KEY)
    b.succeeded(KEY)
    b.failed(KEY, retry_after_s=10_000)
    clock.now += 119
    assert not b.available(KEY)
    clock.now += 1
    assert b.available(KEY)


def test_a_429_that_names_no_time_takes_the_deployment_out_for_a_cool_down() -> None:
    clock = Clock()
    b = breaker(clock, failures=3)
    b.failed(KEY, retry_after_s=None)  # a 429 without Retry-After: one is enough
    assert b.state(KEY) is BreakerState.OPEN and not b.available(KEY)
    clock.now += 29
    assert not b.acquire(KEY)
    clock.now += 1
    assert b.state(KEY) is BreakerState.HALF_OPEN and b.acquire(KEY)
    b.succeeded(KEY)
    # It never shortens a longer time out.
    b.failed(KEY, retry_after_s=100)
    b.failed(KEY, retry_after_s=None)
    clock.now += 99
    assert not b.available(KEY)
    clock.now += 1
    assert b.available(KEY)
    # Other failures still count up to `failures`.
    b.succeeded(KEY)
    b.failed(KEY)
    assert b.state(KEY) is BreakerState.CLOSED


def test_a_model_is_unhealthy_when_no_deployment_takes_calls() -> None:
    clock = Clock()
    b = breaker(clock, failures=1)
    catalog = Catalog(load_config().models)
    assert b.unhealthy(catalog) == frozenset()
    glm = catalog["glm-5.2"]
    b.failed(deployment_key(glm, glm.deployments[0]))
    assert b.unhealthy(catalog) == {"glm-5.2"}
    clock.now += 30
    assert b.unhealthy(catalog) == frozenset()  # half-open: a probe may go
