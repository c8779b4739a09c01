"""One routed call, start to finish: classify, decide, call with fallbacks, cost, record.

The pure policy decides; this module does the I/O around it. `Pipeline.plan` is everything
`Explain` needs; `Pipeline.start` returns a `RouteCall` whose `stream()` yields the answer's
deltas and, however it ends (done, cancelled, broken, failed), costs the call and hands one
`CallRecord` to every observer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from router_service.auth import App
from router_service.catalog import Catalog
from router_service.chat import ChatRequest
from router_service.cost import Usage
from router_service.errors import AllProvidersFailed, ProviderStreamBroken
from router_service.exploration import Exploration
from router_service.fallback import AttemptRecord, FallbackStream, Target
from router_service.policy import Classification, Decision, PolicyInput, decide
from router_service.prefix import canonicalize
from router_service.providers.base import (
    Provider,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
)
from router_service.records import CallObserver, CallRecord, CallStatus
from router_service.telemetry.attributes import CLASSIFIER_VERSION, DIFFICULTY, SPAN_CLASSIFY
from router_service.telemetry.tracing import NO_TRACE, CallTrace
from router_service.tokens import PromptSize, measure_prompt, tokens_for_length

__all__ = ["CallSummary", "DifficultySource", "Pipeline", "Plan", "RouteCall", "Shadowing"]


class DifficultySource(Protocol):
    def classify(self, messages: Sequence[tuple[str, str]]) -> Classification | None:
        """The difficulty of a prompt, or None when no classifier is available."""
        ...


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


class Pipeline:
    """Routes calls; built once by the composition root and shared by every request."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        difficulty: DifficultySource | None,
        observers: Sequence[CallObserver] = (),
        exploration: Exploration | None = None,
        shadow: Shadowing | None = None,
    ) -> None:
        self._catalog = catalog
        self._providers = providers
        self._difficulty = difficulty
        self._observers = tuple(observers)
        self._exploration = exploration
        self._shadow = shadow

    def plan(self, app: App, request: ChatRequest, *, trace: CallTrace = NO_TRACE) -> Plan:
        """Decide where `request` goes. Pure apart from the classifier and the exploration
        draw; never charges."""
        canonical = canonicalize(request)
        request = canonical.request
        task = app.tasks.get(request.task)
        known = task is not None
        if task is None:
            task = app.tasks["default"]
        prompt = measure_prompt(request)
        classification = None
        if self._difficulty is not None and not request.hints.force_model:
            with trace.span(SPAN_CLASSIFY) as span:
                classification = self._difficulty.classify(request.role_contents())
                if classification is not None:
                    span.set_attribute(DIFFICULTY, classification.score)
                    span.set_attribute(CLASSIFIER_VERSION, classification.version)
        exploration = self._exploration
        explore_rate = 0.0 if exploration is None else exploration.exploration_rate(task)
        decision = decide(
            self._catalog,
            PolicyInput(
                task_name=request.task,
                task=task,
                task_known=known,
                hints=request.hints,
                prompt_tokens=prompt.estimate,
                max_output_tokens=request.max_output_tokens or task.default_max_output_tokens,
                needs_tools=bool(request.tools),
                classification=classification,
                exploration_rate=explore_rate,
                exploration_draw=exploration.draw() if exploration and explore_rate else 1.0,
            ),
        )
        return Plan(
            request=request,
            decision=decision,
            prompt=prompt,
            prefix_hash=canonical.prefix_hash,
            targets=self._targets(decision),
        )

    def _targets(self, decision: Decision) -> tuple[Target, ...]:
        return tuple(
            Target(
                model=model, deployment=deployment, provider=self._providers[deployment.provider]
            )
            for model in (self._catalog[name] for name in decision.candidates)
            for deployment in model.deployments
        )

    def start(
        self,
        app: App,
        plan: Plan,
        *,
        trace: CallTrace = NO_TRACE,
        arrived_at: float | None = None,
    ) -> RouteCall:
        """A call of `plan`. `arrived_at` (`time.perf_counter()` when the request arrived)
        lets the record say how much the gateway itself added to the time to first token."""
        return RouteCall(self, app, plan, trace=trace, arrived_at=arrived_at)

    def _finish(self, record: CallRecord) -> None:
        for observer in self._observers:
            observer.observe(record)


class RouteCall:
    """One call in flight. Iterate `stream()` once; `summary` is set when it completes."""

    def __init__(
        self,
        pipeline: Pipeline,
        app: App,
        plan: Plan,
        *,
        trace: CallTrace = NO_TRACE,
        arrived_at: float | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._app = app
        self._request = plan.request
        self.plan = plan
        self.summary: CallSummary | None = None
        # The RPC's trace: budget reserve/settle spans go under it with `trace.span(...)`.
        self.trace = trace
        self._arrived_at = arrived_at
        # perf_counter times: the first upstream request, the first chunk handed on.
        self._upstream_at: float | None = None
        self._first_sent_at: float | None = None
        shadow = pipeline._shadow
        # The answer's text, kept only when the call will be shadow-graded.
        self._answer: list[str] | None = [] if shadow and shadow.wants(app, plan) else None

    def _provider_request(self, target: Target) -> ProviderRequest:
        if self._upstream_at is None:
            self._upstream_at = time.perf_counter()
        request = self._request
        return ProviderRequest(
            model=target.model.upstream_name(target.deployment),
            messages=request.messages,
            tools=request.tools,
            max_output_tokens=self.plan.decision.max_output_tokens,
            temperature=request.temperature,
            prompt_tokens=self.plan.prompt.estimate,
        )

    async def stream(
        self, *, deadline: float | None = None
    ) -> AsyncGenerator[TextDelta | ToolCallDelta, None]:
        """The answer's deltas. `deadline` (event-loop time) is the caller's gRPC deadline: gRPC
        cancels the call when it passes, and the record then says why."""
        started_at = time.time()
        t0 = time.perf_counter()
        first_at: float | None = None
        output_chars = 0
        end: StreamEnd | None = None
        status, error = CallStatus.OK, ""
        fallback = FallbackStream(self.plan.targets, self._provider_request)
        try:
            async with aclosing(fallback.events()) as events:
                async for event in events:
                    if type(event) is StreamEnd:
                        end = event
                        continue
                    if first_at is None:
                        first_at = time.perf_counter()
                    if type(event) is TextDelta:
                        output_chars += len(event.text)
                        if self._answer is not None:
                            self._answer.append(event.text)
                    yield event  # type: ignore[misc]
                    if self._first_sent_at is None:
                        # Resumed: gRPC has taken the first chunk and asks for the next.
                        self._first_sent_at = time.perf_counter()
        except AllProvidersFailed as exc:
            status, error = CallStatus.FAILED, exc.message
            raise
        except ProviderStreamBroken as exc:
            status, error = CallStatus.BROKEN, exc.message
            raise
        except (asyncio.CancelledError, GeneratorExit):
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                status, error = CallStatus.DEADLINE_EXCEEDED, "the caller's deadline passed"
            else:
                status, error = CallStatus.CANCELLED, "the caller cancelled"
            raise
        finally:
            self._settle(
                fallback=fallback,
                end=end,
                status=status,
                error=error,
                started_at=started_at,
                t0=t0,
                first_at=first_at,
                output_chars=output_chars,
            )

    def _settle(
        self,
        *,
        fallback: FallbackStream,
        end: StreamEnd | None,
        status: str,
        error: str,
        started_at: float,
        t0: float,
        first_at: float | None,
        output_chars: int,
    ) -> None:
        serving = fallback.serving
        if end is not None:
            usage = end.usage
        elif serving is not None:
            # The stream broke or was cancelled: bill what was produced, as the provider will.
            usage = Usage(
                input_tokens=self.plan.prompt.estimate,
                output_tokens=tokens_for_length(output_chars),
            )
        else:
            usage = Usage()
        cost = serving.model.prices.cost_micro_usd(usage) if serving is not None else 0
        now = time.perf_counter()
        summary = CallSummary(
            finish_reason=end.finish_reason if end is not None else status,
            usage=usage,
            cost_micro_usd=cost,
            ttft_ms=None if first_at is None else (first_at - t0) * 1000,
            latency_ms=(now - t0) * 1000,
            served_from_cache=False,
            attempts=tuple(fallback.attempts),
            model=serving.model.name if serving is not None else "",
            provider=serving.provider.name if serving is not None else "",
        )
        self.summary = summary
        app = self._app
        record = CallRecord(
            request_id=self._request.request_id,
            started_at=started_at,
            app=app.name,
            decision=self.plan.decision,
            usage=usage,
            cost_micro_usd=cost,
            ttft_ms=summary.ttft_ms,
            latency_ms=summary.latency_ms,
            served_from_cache=False,
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
        self._pipeline._finish(record)
        self.trace.record_call(record)
        shadow = self._pipeline._shadow
        if shadow is not None and self._answer and status == CallStatus.OK:
            shadow.submit(app, self.plan, record, "".join(self._answer), self.trace)

    def _overhead_ms(self, first_at: float | None) -> float | None:
        """Arrival to first upstream request, plus first upstream chunk to its hand-off."""
        arrived, upstream, sent = self._arrived_at, self._upstream_at, self._first_sent_at
        if arrived is None or upstream is None or first_at is None or sent is None:
            return None
        return ((upstream - arrived) + (sent - first_at)) * 1000
