"""Events an operator must hear about: one small function each, logging and counting.

The budget, store and cache modules call these and nothing else to report trouble, so an
operator's metrics exporter has one place to hook into: `COUNTS` holds how often each event
happened in this process, and each function is where an OpenTelemetry counter goes. Messages
name apps and amounts, never keys or prompt text.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

__all__ = [
    "COUNTS",
    "budget_soft_threshold_crossed",
    "lease_lost",
    "reservation_shortfall",
    "settle_failed",
    "store_recovered",
    "store_refused",
    "store_unavailable",
]

log = logging.getLogger("router_service.alerts")

# Event name -> how many times it happened in this process.
COUNTS: Counter[str] = Counter()

# While Redis stays down, say so at most this often (every call still counts).
_UNAVAILABLE_LOG_INTERVAL_S = 30.0
_last_unavailable_log = -_UNAVAILABLE_LOG_INTERVAL_S
_last_refused_log = -_UNAVAILABLE_LOG_INTERVAL_S


def budget_soft_threshold_crossed(
    app: str, period: str, spent_fraction: float, soft_threshold: float
) -> None:
    """An app's spend crossed its soft threshold: requests now downgrade to cheap."""
    COUNTS["budget_soft_threshold_crossed"] += 1
    log.warning(
        "budget alert: app %s has spent %.1f%% of its %s budget (soft threshold %.0f%%); "
        "requests now downgrade to the cheap tier unless they require frontier",
        app,
        spent_fraction * 100,
        period,
        soft_threshold * 100,
    )


def store_unavailable(operation: str, policy: str, error: BaseException) -> None:
    """Redis could not be reached; `policy` says what happens instead."""
    global _last_unavailable_log  # noqa: PLW0603 - one rate limiter for one log line
    COUNTS["store_unavailable"] += 1
    COUNTS[f"store_unavailable.{policy}"] += 1
    now = time.monotonic()
    if now - _last_unavailable_log >= _UNAVAILABLE_LOG_INTERVAL_S:
        _last_unavailable_log = now
        action = {
            "fail_open": "counting budgets and limits locally in this replica (fail_open)",
            "fail_closed": "refusing requests with UNAVAILABLE (fail_closed)",
        }.get(policy, "kept to retry when Redis returns")
        log.warning(
            "store unavailable during %s (%s: %s): %s",
            operation,
            type(error).__name__,
            error,
            action,
        )


def store_refused(operation: str, error: BaseException) -> None:
    """Redis answered an operation with an error that is not an outage (a script or key bug,
    a misconfiguration): that operation falls back; Redis is not marked down."""
    global _last_refused_log  # noqa: PLW0603 - one rate limiter for one log line
    COUNTS["store_refused"] += 1
    now = time.monotonic()
    if now - _last_refused_log >= _UNAVAILABLE_LOG_INTERVAL_S:
        _last_refused_log = now
        log.error("Redis refused %s: %s: %s", operation, type(error).__name__, error)


def store_recovered(down_for_s: float) -> None:
    global _last_unavailable_log  # noqa: PLW0603
    COUNTS["store_recovered"] += 1
    _last_unavailable_log = -_UNAVAILABLE_LOG_INTERVAL_S
    log.warning("store reachable again after %.1f s; shared counting resumed", down_for_s)


def reservation_shortfall(app: str, reserved_micro_usd: int, actual_micro_usd: int) -> None:
    """A call cost more than its reservation: the provider billed beyond the proven bound."""
    COUNTS["reservation_shortfall"] += 1
    log.error(
        "app %s: call cost %d micro-USD but only %d were reserved; the budget limit may be "
        "exceeded by the difference",
        app,
        actual_micro_usd,
        reserved_micro_usd,
    )


def lease_lost(app: str, count: int) -> None:
    """Reservations of a live call expired before it settled (the replica stalled)."""
    COUNTS["lease_lost"] += count
    log.error(
        "app %s: %d budget reservations expired while their calls were still running", app, count
    )


def settle_failed(app: str, cost_micro_usd: int, error: BaseException) -> None:
    """A call's cost could not be recorded; its reservation is released when its lease ends."""
    COUNTS["settle_failed"] += 1
    log.error(
        "app %s: a call's cost of %d micro-USD was never recorded (%s: %s)",
        app,
        cost_micro_usd,
        type(error).__name__,
        error,
    )
