"""One call in flight: stream the answer with fallbacks, then cost and record it.

`Pipeline.start` makes a `RouteCall` once the call is admitted. Its `stream()` yields the
answer's deltas and, however it ends (done, cancelled, broken, failed), costs the call, hands one
`CallRecord` to every observer, and leaves the settling of its budget hold to `Accounting` in the
background, where no cancellation reaches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Protocol

from router_service.accounting import Accounting, AfterCall
from router_service.auth import App
from router_service.breaker import CircuitBreaker
from router_service.budgets import Hold
from router_service.catalog import REASONING
from router_service.chat import ChatRequest
from router_service.cost import Usage
from router_service.errors import (
    AllProvidersFailed,
    InvalidRequest,
    ProviderStreamBroken,
    QuotaExceeded,
    StoreUnavailable,
)
from router_service.fallback import AttemptRecord, FallbackStream, Target
from router_service.policy import Decision
from router_service.providers.base import (
    ProviderEvents,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from router_service.records import CallRecord, CallStatus, unserved_call
from router_service.response_cache import AnswerRecorder, CachedAnswer
from router_service.telemetry.tracing import NO_TRACE, CallTrace
from router_service.tokens import PromptSize, TextSize

__all__ = ["CallServices", "CallSummary", "Plan", "RouteCall", "Shadowing", "refusal"]


class Shadowing(Protocol):
    """Shadow grading (`shadow.runner`): sampled when a call starts, handed the answer after."""

    def wants(self, app: App, plan: Plan) -> bool:
        """Whether this call is shadow-graded (a draw; the caller keeps the answer's text)."""
        ...

    def submit(
        self, app: App, plan: Plan, record: CallRecord, answer: str, trace: CallTrace
    ) -> None:
        """Grade the finished call in the background; never blocks."""
        ...


@dataclass(frozen=True, slots=True)
class Plan:
    """A decision, the facts it was made from, and where it will be sent."""

    # The request with its prefix in canonical form: what providers receive.
    request: ChatRequest
    decision: Decision
    prompt: PromptSize
    prefix_hash: str
    # Every deployment of every candidate model, in the order they will be tried.
    targets: tuple[Target, ...]
    # The budget hold for this call: the dearest candidate's worst case (see `budgets`).
    hold_micro_usd: int = 0
    # Whether the prefix is long enough for provider caches (and so for cache affinity).
    cacheable_prefix: bool = False


@dataclass(frozen=True, slots=True)
class CallSummary:
    finish_reason: str
    usage: Usage
    cost_micro_usd: int
    ttft_ms: float | None
    latency_ms: float
    served_from_cache: bool
    attempts: tuple[AttemptRecord, ...]
    model: str
    provider: str


@dataclass(frozen=True, slots=True)
class CallServices:
    """What a call needs from the pipeline that made it."""

    accounting: Accounting
    breaker: CircuitBreaker
    shadow: Shadowing | None
    # Hands the finished call's record to every observer.
    finish: Callable[[CallRecord], None]


def refusal(app: App, plan: Plan, error: QuotaExceeded | StoreUnavailable) -> CallRecord:
    """The record of a call refused before any provider was called: by a quota, or by the
    fail-closed policy while the store is unreachable."""
    request = plan.request
    return unserved_call(
        app.name,
        request.request_id,
        plan.decision,
        CallStatus.REFUSED,
        error.message,
        prompt=request.role_contents() if app.config.training_data_opt_in else None,
        metadata=request.metadata,
    )


def _ending(exc: BaseException, deadline: float | None) -> tuple[str, str]:
    """The call status and error message for a stream that ended with `exc`."""
    if isinstance(exc, AllProvidersFailed):
        return CallStatus.FAILED, exc.message
    if isinstance(exc, InvalidRequest):
        return CallStatus.REJECTED, exc.message
    if isinstance(exc, ProviderStreamBroken):
        return CallStatus.BROKEN, exc.message
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            return CallStatus.DEADLINE_EXCEEDED, "the caller's deadline passed"
        return CallStatus.CANCELLED, "the caller cancelled"
    return CallStatus.FAILED, f"internal error: {type(exc).__name__}"


@dataclass(slots=True)
class _Received:
    """What the answer's batches have brought so far."""

    output: TextSize = field(default_factory=TextSize)
    end: StreamEnd | None = None
    # The provider's own usage counts so far, for billing a stream that ends early.
    reported: Usage | None = None
    # The answer's text, when it is kept (for shadow grading).
    text: list[str] | None = None
    # The answer for the response cache, when it will be stored.
    recorder: AnswerRecorder | None = None

    def take(self, batch: ProviderEvents) -> list[TextDelta | ToolCallDelta]:
        """The batch's deltas, in order; notes its text, usage and end on the way."""
        deltas: list[TextDelta | ToolCallDelta] = []
        for event in batch:
            if type(event) is TextDelta:
                self.output.add(event.text)
                if self.text is not None:
                    self.text.append(event.text)
                deltas.append(event)
            elif type(event) is ToolCallDelta:
                deltas.append(event)
            elif type(event) is StreamEnd:
                self.end = event
            elif type(event) is UsageReport:
                self.reported = event.usage
        if self.recorder is not None:
            for delta in deltas:
                self.recorder.add(delta)
        return deltas


async def _replay(answer: CachedAnswer) -> AsyncGenerator[ProviderEvents, None]:
    """A cached answer as a provider stream: its deltas at once, then an end with no usage."""
    if answer.events:
        yield answer.events
    yield (StreamEnd(finish_reason=answer.finish_reason, usage=Usage(), model=answer.model),)


class RouteCall:
    """One call in flight. Iterate `stream()` once; `summary` is set when it completes."""

    def __init__(
        self,
        services: CallServices,
        app: App,
        plan: Plan,
        *,
        hold: Hold | None = None,
        cache_key: str | None = None,
        cached: CachedAnswer | None = None,
        trace: CallTrace = NO_TRACE,
        arrived_at: float | None = None,
    ) -> None:
        self._services = services
        self._app = app
        self._request = plan.request
        self.plan = plan
        self.summary: CallSummary | None = None
        self._hold = hold
        # Where to store the answer when it completes (eligible requests that missed).
        self._cache_key = cache_key
        # The answer to replay instead of calling a provider (a response-cache hit).
        self._cached = cached
        self._finished = False
        # The RPC's trace: budget reserve/settle spans go under it with `trace.span(...)`.
        self.trace = trace
        self._arrived_at = arrived_at
        # perf_counter times: the first upstream request, the first chunk handed on.
        self._upstream_at: float | None = None
        self._first_sent_at: float | None = None
        shadow = services.shadow
        # The answer's text, kept only when the call will be shadow-graded (a response-cache
        # replay is not: no outcome of it is exported, so its grades would be spend for nothing).
        self._answer: list[str] | None = (
            [] if cached is None and shadow and shadow.wants(app, plan) else None
        )

    def release(self) -> None:
        """End a call whose `stream()` never ran (the caller left before it began, while the
        decision was being sent): its hold goes back and it is recorded as cancelled, at no
        cost, like a call cancelled before its first upstream request. Does nothing once the
        stream has run."""
        if not self._finished:
            self._settle(
                fallback=FallbackStream((), self._provider_request),
                received=_Received(),
                status=CallStatus.CANCELLED,
                error="the caller left before the answer began",
                started_at=time.time(),
                t0=time.perf_counter(),
                first_at=None,
            )

    def _provider_request(self, target: Target) -> ProviderRequest:
        if self._upstream_at is None:
            self._upstream_at = time.perf_counter()
        request = self._request
        return ProviderRequest(
            model=target.model.upstream_name(target.deployment),
            messages=request.messages,
            tools=request.tools,
            max_output_tokens=self.plan.decision.max_output_tokens,
            # A reasoning model refuses any temperature but its default (a 400).
            temperature=None if REASONING in target.model.capabilities else request.temperature,
            prompt_tokens=self.plan.prompt.estimate,
        )

    async def stream(
        self, *, deadline: float | None = None
    ) -> AsyncGenerator[list[TextDelta | ToolCallDelta], None]:
        """The answer's deltas, those that arrived together in one list (never empty).
        `deadline` (event-loop time) is the caller's gRPC deadline: gRPC cancels the call when
        it passes, and the record then says why."""
        started_at = time.time()
        t0 = time.perf_counter()
        first_at: float | None = None
        status, error = CallStatus.OK, ""
        fallback = FallbackStream(
            self.plan.targets, self._provider_request, breaker=self._services.breaker
        )
        source = fallback.events() if self._cached is None else _replay(self._cached)
        received = _Received(
            text=self._answer,
            recorder=AnswerRecorder() if self._cache_key is not None else None,
        )
        try:
            async with aclosing(source) as batches:
                async for batch in batches:
                    deltas = received.take(batch)
                    if not deltas:
                        continue
                    if first_at is None:
                        first_at = time.perf_counter()
                    yield deltas
                    if self._first_sent_at is None:
                        # Resumed: gRPC has taken the first chunk and asks for the next.
                        self._first_sent_at = time.perf_counter()
        except BaseException as exc:
            status, error = _ending(exc, deadline)
            raise
        finally:
            self._settle(
                fallback=fallback,
                received=received,
                status=status,
                error=error,
                started_at=started_at,
                t0=t0,
                first_at=first_at,
            )

    def _settle(
        self,
        *,
        fallback: FallbackStream,
        received: _Received,
        status: str,
        error: str,
        started_at: float,
        t0: float,
        first_at: float | None,
    ) -> None:
        self._finished = True
        serving = fallback.serving
        end, recorder = received.end, received.recorder
        if end is not None:
            usage = end.usage
        elif serving is not None:
            # The stream broke or was cancelled: bill what was produced, as the provider will,
            # from its own counts where it reported them (never more output than the request
            # allowed, which the provider enforces).
            usage = received.reported or Usage(input_tokens=self.plan.prompt.estimate)
            produced = max(usage.output_tokens, received.output.tokens)
            usage = replace(
                usage, output_tokens=min(produced, self.plan.decision.max_output_tokens)
            )
        else:
            usage = Usage()
        cost = serving.model.prices.cost_micro_usd(usage) if serving is not None else 0
        cached = self._cached
        now = time.perf_counter()
        summary = CallSummary(
            finish_reason=end.finish_reason if end is not None else status,
            usage=usage,
            cost_micro_usd=cost,
            ttft_ms=None if first_at is None else (first_at - t0) * 1000,
            latency_ms=(now - t0) * 1000,
            served_from_cache=cached is not None,
            attempts=tuple(fallback.attempts),
            model=serving.model.name if serving is not None else "",
            provider=serving.provider.name if serving is not None else "",
        )
        if cached is not None:
            summary = replace(summary, model=cached.model, provider=cached.provider)
        self.summary = summary
        app = self._app
        answer = None
        if recorder is not None and end is not None and status == CallStatus.OK:
            answer = recorder.answer(end.finish_reason, summary.model, summary.provider)
        self._services.accounting.after_call(
            AfterCall(
                app=app,
                hold=self._hold,
                cost_micro_usd=cost,
                output_tokens=usage.output_tokens,
                cache=None
                if answer is None or self._cache_key is None
                else (self._cache_key, answer),
                warm=(self.plan.prefix_hash, serving.model.name)
                if serving is not None and self.plan.cacheable_prefix
                else None,
                trace=self.trace,
            )
        )
        record = CallRecord(
            request_id=self._request.request_id,
            started_at=started_at,
            app=app.name,
            decision=self.plan.decision,
            usage=usage,
            cost_micro_usd=cost,
            ttft_ms=summary.ttft_ms,
            latency_ms=summary.latency_ms,
            served_from_cache=summary.served_from_cache,
            attempts=summary.attempts,
            status=status,
            error=error,
            model=summary.model,
            provider=summary.provider,
            finish_reason=summary.finish_reason,
            prompt=self._request.role_contents() if app.config.training_data_opt_in else None,
            metadata=self._request.metadata,
            response_model=end.model if end is not None else "",
            overhead_ms=self._overhead_ms(first_at),
        )
        self._services.finish(record)
        self.trace.record_call(record)
        shadow = self._services.shadow
        if shadow is not None and self._answer and status == CallStatus.OK:
            shadow.submit(app, self.plan, record, "".join(self._answer), self.trace)

    def _overhead_ms(self, first_at: float | None) -> float | None:
        """Arrival to first upstream request, plus first upstream chunk to its hand-off."""
        arrived, upstream, sent = self._arrived_at, self._upstream_at, self._first_sent_at
        if arrived is None or upstream is None or first_at is None or sent is None:
            return None
        return ((upstream - arrived) + (sent - first_at)) * 1000
