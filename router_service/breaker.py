"""Circuit breakers for provider deployments: a failing deployment is taken out for a while.

One breaker per deployment (a model at one provider), kept in the process: each replica
learns on its own, as breakers normally do, and a replica that restarts starts closed.

    closed ──`failures` consecutive failures──▶ open ──`cool_down_s` passes──▶ half-open
      ▲                                          ▲                                │
      └───────────── the probe succeeds ─────────┼──────── the probe fails ───────┘

Half-open lets exactly one call through (the probe); the others skip the deployment until the
probe's outcome is known. A 429 opens the breaker until its Retry-After has passed (for
`cool_down_s` when the upstream said no time), whatever the count. A call that ends without a
verdict (cancelled, or refused for its own fault) frees the probe slot. `fallback.FallbackStream`
is the only writer; the policy and `Admin.ListModels` read which models are healthy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from router_service.catalog import CatalogModel
from router_service.config import CircuitBreakerConfig, Deployment

__all__ = ["BreakerState", "CircuitBreaker", "deployment_key"]


class _NotRateLimited:
    """The default of `CircuitBreaker.failed`'s `retry_after_s`: the failure was no 429."""


_NOT_RATE_LIMITED = _NotRateLimited()


def deployment_key(model: CatalogModel, deployment: Deployment) -> str:
    """What a breaker is kept for: a provider and the model's name there."""
    return f"{deployment.provider}/{model.upstream_name(deployment)}"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Circuit:
    consecutive_failures: int = 0
    # Clock time until which calls are refused; 0: not opened since the last success.
    open_until: float = 0.0
    # When the probe now in flight was let through, if one is.
    probe_since: float | None = None


class CircuitBreaker:
    """Every deployment's breaker. Deployments that never failed cost nothing to track."""

    def __init__(
        self,
        config: CircuitBreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config or CircuitBreakerConfig()
        self._clock = clock
        # Only deployments that failed since their last success have an entry.
        self._circuits: dict[str, _Circuit] = {}

    def state(self, key: str) -> BreakerState:
        circuit = self._circuits.get(key)
        if circuit is None or circuit.open_until == 0.0:
            return BreakerState.CLOSED
        if self._clock() < circuit.open_until:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def acquire(self, key: str) -> bool:
        """Whether a call may go to `key` now. While half-open only one caller gets True: it
        is the probe, and must report `succeeded`, `failed` or `released`."""
        if not self.available(key):
            return False
        circuit = self._circuits.get(key)
        if circuit is not None and circuit.open_until != 0.0:
            circuit.probe_since = self._clock()
        return True

    def available(self, key: str) -> bool:
        """Whether `acquire` would let a call through now (without taking the probe slot)."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.open_until == 0.0:
            return True
        now = self._clock()
        if now < circuit.open_until:
            return False
        # A probe that never reported (its task died) must not keep the deployment out: after
        # another cool-down a new probe goes.
        return circuit.probe_since is None or now >= circuit.probe_since + self._config.cool_down_s

    def succeeded(self, key: str) -> None:
        self._circuits.pop(key, None)

    def failed(
        self, key: str, *, retry_after_s: float | _NotRateLimited | None = _NOT_RATE_LIMITED
    ) -> None:
        """A call to `key` failed. Giving `retry_after_s` says it was a 429: the deployment is
        out until then (at most `max_retry_after_s`), or for `cool_down_s` when it is None (the
        upstream said no time), whatever the count; a rate-limited deployment asked again at
        once would only refuse again."""
        circuit = self._circuits.setdefault(key, _Circuit())
        circuit.consecutive_failures += 1
        circuit.probe_since = None
        now = self._clock()
        config = self._config
        if retry_after_s is None:
            circuit.open_until = max(circuit.open_until, now + config.cool_down_s)
        elif not isinstance(retry_after_s, _NotRateLimited):
            until = now + min(retry_after_s, config.max_retry_after_s)
            circuit.open_until = max(circuit.open_until, until)
        elif circuit.open_until != 0.0 or circuit.consecutive_failures >= config.failures:
            # Reaching the threshold, or a failed probe: out for another cool-down.
            circuit.open_until = now + config.cool_down_s

    def released(self, key: str) -> None:
        """The call ended without a verdict on the deployment: free the probe slot."""
        circuit = self._circuits.get(key)
        if circuit is not None:
            circuit.probe_since = None

    def unhealthy(self, models: Iterable[CatalogModel]) -> frozenset[str]:
        """The models none of whose deployments would take a call now."""
        if not self._circuits:
            return frozenset()
        return frozenset(
            model.name
            for model in models
            if not any(self.available(deployment_key(model, d)) for d in model.deployments)
        )
