"""Retries and fallbacks, all in this one module.

The candidates of a decision are tried in order. A candidate that fails before its first event
is recorded and the next one is tried; once an event has been handed on towards the caller the
stream is committed to that candidate, and a later failure ends the call with
`ProviderStreamBroken`: nothing is ever retried after the first chunk reached the caller.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from router_service.catalog import CatalogModel
from router_service.config import Deployment
from router_service.errors import AllProvidersFailed, ProviderError, ProviderStreamBroken
from router_service.providers.base import Provider, ProviderEvent, ProviderRequest

__all__ = ["AttemptOutcome", "AttemptRecord", "FallbackStream", "Target"]


class AttemptOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    BROKEN = "broken"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    model: str
    provider: str
    outcome: AttemptOutcome
    error: str = ""
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """A model at one of its deployments."""

    model: CatalogModel
    deployment: Deployment
    provider: Provider


class FallbackStream:
    """Streams from the first target that produces an event; records every attempt."""

    def __init__(
        self,
        targets: Sequence[Target],
        request_for: Callable[[Target], ProviderRequest],
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._targets = targets
        self._request_for = request_for
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
            )
        )

    async def events(self) -> AsyncGenerator[ProviderEvent, None]:
        for target in self._targets:
            started = self._clock()
            stream = target.provider.stream(self._request_for(target))
            try:
                first = await anext(stream)
            except ProviderError as exc:
                await stream.aclose()
                self._record(target, AttemptOutcome.FAILED, started, exc.message)
                continue
            except StopAsyncIteration:
                self._record(target, AttemptOutcome.FAILED, started, "empty response")
                continue
            self.serving = target
            try:
                yield first
                async for event in stream:
                    yield event
            except ProviderError as exc:
                self._record(target, AttemptOutcome.BROKEN, started, exc.message)
                raise ProviderStreamBroken(
                    f"{target.model.name} stream broke after the answer began: {exc.message}",
                    provider=target.provider.name,
                ) from exc
            finally:
                await stream.aclose()
            self._record(target, AttemptOutcome.SUCCEEDED, started, "")
            return
        tried = "; ".join(f"{a.model}: {a.error}" for a in self.attempts) or "no candidates"
        raise AllProvidersFailed(f"every candidate failed before its first token ({tried})")
