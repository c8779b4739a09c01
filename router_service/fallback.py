"""Retries and fallbacks, all in this one module.

The plan's targets are tried in order: every deployment of the chosen model, then the other
models of its tier, then the configured fallbacks (the order comes from the policy, which puts
unhealthy models last). A target whose circuit breaker is open is skipped. Once a target's first
token has been handed on towards the caller the call is committed to it: a later failure ends
the call with `ProviderStreamBroken`, and nothing is ever retried after the first chunk.

What a failure before the first token does:

    ProviderRequestInvalid   400/413/422: the call ends with INVALID_ARGUMENT. The request
                             itself is at fault; every candidate would refuse it, and trying
                             them all would only spend time and rate limit.
    ProviderContextExceeded  the next target (a larger window may fit); not held against the
                             deployment.
    ProviderRateLimited      429: the next target; the deployment is out until its Retry-After
                             (else the rate-limit reset or "try again in" time the upstream
                             gave; for cool_down_s when it gave none).
    ProviderRejected         401/403/404, or a 400 refusing a parameter or value this
                             deployment's model does not take (OpenAI's `unsupported_parameter`,
                             `unsupported_value`, e.g. `max_tokens` or temperature 0 on a
                             reasoning model): the next target; counts against the deployment
                             (a wrong key, model name or parameter policy stays wrong until
                             someone fixes it). A refused parameter's attempt error carries the
                             upstream's (scrubbed) words.
    connect error, timeout,  the next target; counts against the deployment.
    5xx, broken stream

A deployment is never retried within the call that saw it fail: the next candidate answers
sooner than a back-off would, and the breaker gives the deployment its next chance on a later
call. Each attempt, skipped ones included, is recorded as an `AttemptRecord`; one the call's
cancellation (the caller's, or its deadline) cut short is recorded as cancelled.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from router_service.breaker import CircuitBreaker, deployment_key
from router_service.catalog import CatalogModel
from router_service.config import Deployment
from router_service.errors import (
    AllProvidersFailed,
    InvalidRequest,
    ProviderContextExceeded,
    ProviderError,
    ProviderRateLimited,
    ProviderRequestInvalid,
    ProviderStreamBroken,
)
from router_service.providers.base import Provider, ProviderEvents, ProviderRequest, UsageReport

__all__ = ["AttemptOutcome", "AttemptRecord", "FallbackStream", "Target"]


class AttemptOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    BROKEN = "broken"
    # The call ended while this attempt ran: the caller cancelled or its deadline passed.
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    # The catalog's name of the model tried.
    model: str
    provider: str
    outcome: AttemptOutcome
    error: str = ""
    latency_ms: float = 0.0
    # The model name sent to the provider (the deployment's `upstream_model`, else `model`);
    # empty in call-log entries written before it was recorded.
    upstream_model: str = ""

    @property
    def request_model(self) -> str:
        """The model name this attempt asked the provider for (`gen_ai.request.model`)."""
        return self.upstream_model or self.model


@dataclass(frozen=True, slots=True)
class Target:
    """A model at one of its deployments."""

    model: CatalogModel
    deployment: Deployment
    provider: Provider

    @property
    def key(self) -> str:
        """The deployment's circuit breaker key."""
        return deployment_key(self.model, self.deployment)


class FallbackStream:
    """Streams from the first target that produces a token; records every attempt."""

    def __init__(
        self,
        targets: Sequence[Target],
        request_for: Callable[[Target], ProviderRequest],
        *,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._targets = targets
        self._request_for = request_for
        self._breaker = breaker if breaker is not None else CircuitBreaker()
        self._clock = clock
        self.attempts: list[AttemptRecord] = []
        # The target that is serving the answer, once one produced its first event.
        self.serving: Target | None = None

    def _record(self, target: Target, outcome: AttemptOutcome, started: float, error: str) -> None:
        self.attempts.append(
            AttemptRecord(
                model=target.model.name,
                provider=target.provider.name,
                outcome=outcome,
                error=error,
                latency_ms=(self._clock() - started) * 1000,
                upstream_model=target.model.upstream_name(target.deployment),
            )
        )

    def _failed_before_first_token(self, target: Target, exc: ProviderError) -> None:
        if isinstance(exc, ProviderContextExceeded):
            self._breaker.released(target.key)
        elif isinstance(exc, ProviderRateLimited):
            self._breaker.failed(target.key, retry_after_s=exc.retry_after_s)
        else:
            self._breaker.failed(target.key)

    async def events(self) -> AsyncGenerator[ProviderEvents, None]:
        breaker = self._breaker
        for target in self._targets:
            started = self._clock()
            key = target.key
            if not breaker.acquire(key):
                self._record(target, AttemptOutcome.SKIPPED, started, "circuit breaker open")
                continue
            # Whether the breaker heard how this attempt went; if not, its probe slot is freed.
            judged = False
            recorded = len(self.attempts)
            stream = target.provider.stream(self._request_for(target))
            try:
                try:
                    first = await _first_answer(stream)
                except ProviderRequestInvalid as exc:
                    self._record(target, AttemptOutcome.FAILED, started, exc.message)
                    refused = f"{target.model.name} refused the request: {exc.message}"
                    shown = f"{refused}: {exc.upstream_detail}" if exc.upstream_detail else None
                    raise InvalidRequest(refused, caller_message=shown) from exc
                except ProviderError as exc:
                    self._failed_before_first_token(target, exc)
                    judged = True
                    self._record(target, AttemptOutcome.FAILED, started, exc.message)
                    continue
                except StopAsyncIteration:
                    breaker.failed(key)
                    judged = True
                    self._record(target, AttemptOutcome.FAILED, started, "empty response")
                    continue
                self.serving = target
                try:
                    yield first
                    async for batch in stream:
                        yield batch
                except ProviderError as exc:
                    breaker.failed(key)
                    judged = True
                    self._record(target, AttemptOutcome.BROKEN, started, exc.message)
                    raise ProviderStreamBroken(
                        f"{target.model.name} stream broke after the answer began: {exc.message}",
                        provider=target.provider.name,
                    ) from exc
                breaker.succeeded(key)
                judged = True
                self._record(target, AttemptOutcome.SUCCEEDED, started, "")
                return
            finally:
                await stream.aclose()
                if not judged:
                    breaker.released(key)
                if len(self.attempts) == recorded:
                    # Left without an outcome of its own: the call was cancelled around it.
                    self._record(target, AttemptOutcome.CANCELLED, started, "")
        tried = "; ".join(f"{a.model}: {a.error}" for a in self.attempts) or "no candidates"
        raise AllProvidersFailed(f"every candidate failed before its first token ({tried})")


async def _first_answer(stream: AsyncGenerator[ProviderEvents, None]) -> ProviderEvents:
    """The stream's first batch with an event that is part of the answer (usage alone does not
    commit the call to this target), after the latest usage reported before it."""
    usage = None
    batch = await anext(stream)
    while all(type(event) is UsageReport for event in batch):
        usage = batch[-1]
        batch = await anext(stream)
    return batch if usage is None else (usage, *batch)
