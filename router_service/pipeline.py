"""One routed call, start to finish: classify, decide, call with fallbacks, cost, record.

The pure policy decides; this module does the I/O around it. `Pipeline.plan` is everything
`Explain` needs; `Pipeline.start` admits the call (rate limits, response cache, budget hold)
and returns a `RouteCall` whose `stream()` yields the answer's deltas and, however it ends (done,
cancelled, broken, failed), costs the call, hands one `CallRecord` to every observer, and leaves
the settling of its budget hold to `Accounting` in the background, where no cancellation reaches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Protocol

from router_service import response_cache
from router_service.accounting import Accounting, AfterCall
from router_service.affinity import affinity_key, rendezvous_order
from router_service.auth import App
from router_service.breaker import CircuitBreaker, deployment_key
from router_service.budgets import BudgetSnapshot, Hold
from router_service.catalog import Catalog
from router_service.chat import ChatRequest
from router_service.cost import Usage
from router_service.errors import (
    AllProvidersFailed,
    InvalidRequest,
    ProviderStreamBroken,
    QuotaExceeded,
)
from router_service.exploration import Exploration
from router_service.fallback import AttemptRecord, FallbackStream, Target
from router_service.policy import BudgetState, Classification, Decision, PolicyInput, decide
from router_service.prefix import canonicalize
from router_service.providers.base import (
    Provider,
    ProviderEvent,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from router_service.records import CallObserver, CallRecord, CallStatus
from router_service.response_cache import AnswerRecorder, CachedAnswer
from router_service.telemetry.attributes import (
    CLASSIFIER_VERSION,
    DIFFICULTY,
    SPAN_BUDGET_RESERVE,
    SPAN_CLASSIFY,
)
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
    # The budget hold for this call: the dearest candidate's worst case (see `budgets`).
    hold_micro_usd: int = 0
    # The app's budget the decision was made with.
    budget: BudgetSnapshot | None = None
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


class Pipeline:
    """Routes calls; built once by the composition root and shared by every request."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        difficulty: DifficultySource | None,
        observers: Sequence[CallObserver] = (),
        accounting: Accounting | None = None,
        breaker: CircuitBreaker | None = None,
        exploration: Exploration | None = None,
        shadow: Shadowing | None = None,
    ) -> None:
        self._catalog = catalog
        self._providers = providers
        self._difficulty = difficulty
        self._observers = tuple(observers)
        # Without one given, budgets, limits and caches live in this process.
        self._accounting = accounting or Accounting.in_memory()
        # Per-deployment health: read by the policy, written by the fallback logic.
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._exploration = exploration
        self._shadow = shadow

    async def plan(
        self,
        app: App,
        request: ChatRequest,
        *,
        trace: CallTrace = NO_TRACE,
        explore: bool = True,
    ) -> Plan:
        """Decide where `request` goes. Reads budget state and prefix warmth and, with
        `explore`, draws for exploration (Explain does not: it shows the policy's own choice);
        never charges."""
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
        budget = await self._accounting.budgets.snapshot(app)
        key = affinity_key(canonical)
        cacheable = key == canonical.prefix_hash
        warm = (
            await self._accounting.warmth.warm_models(app.name, key) if cacheable else frozenset()
        )
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
                budget=budget.state,
                warm=warm,
                unhealthy=self.breaker.unhealthy(self._catalog),
                exploration_rate=explore_rate,
                exploration_draw=(
                    exploration.draw() if explore and exploration and explore_rate else 1.0
                ),
            ),
        )
        hold = self._worst_case(decision, prompt)
        if decision.budget is not BudgetState.EXHAUSTED and not budget.fits(hold):
            decision = replace(
                decision,
                budget=BudgetState.EXHAUSTED,
                reasons=(
                    *decision.reasons,
                    "budget: too little left this month for this request's worst case "
                    f"(${hold / 1e6:.6f}): the call will be refused",
                ),
            )
        return Plan(
            request=request,
            decision=decision,
            prompt=prompt,
            prefix_hash=canonical.prefix_hash,
            targets=self._targets(decision, key),
            cacheable_prefix=cacheable,
            hold_micro_usd=hold,
            budget=budget,
        )

    def _worst_case(self, decision: Decision, prompt: PromptSize) -> int:
        """The most the call can cost whichever candidate serves it: the provable prompt-token
        bound, and every allowed output token, at the dearest candidate's prices."""
        return max(
            self._catalog[name].prices.worst_case_micro_usd(
                prompt.bound, decision.max_output_tokens
            )
            for name in decision.candidates
        )

    def _targets(self, decision: Decision, affinity: str) -> tuple[Target, ...]:
        # Each model's deployments in rendezvous order for the affinity key (the prefix, when it
        # can be cached): the same prefix goes to the same warm deployment from every replica;
        # deployments whose circuit is open go last.
        breaker = self.breaker
        targets = []
        for name in decision.candidates:
            model = self._catalog[name]
            keys = {d: deployment_key(model, d) for d in model.deployments}
            unhealthy = {key for key in keys.values() if not breaker.available(key)}
            targets += [
                Target(model=model, deployment=d, provider=self._providers[d.provider])
                for d in rendezvous_order(affinity, model.deployments, keys.__getitem__, unhealthy)
            ]
        return tuple(targets)

    async def start(
        self,
        app: App,
        plan: Plan,
        *,
        trace: CallTrace = NO_TRACE,
        arrived_at: float | None = None,
    ) -> RouteCall:
        """Admit the call: rate limits, then the response cache, then the budget hold.

        Raises `QuotaExceeded` (nothing is held and a refusal is recorded) or, when the store
        is unreachable and the policy is fail-closed, `StoreUnavailable`. The caller must
        `release()` the call if it never iterates `stream()`. `arrived_at`
        (`time.perf_counter()` when the request arrived) lets the record say how much the
        gateway itself added to the time to first token.
        """
        accounting = self._accounting
        cache_key = None
        try:
            await accounting.rate_limits.admit(app, plan.prompt.estimate)
            if response_cache.eligible(app, plan.request):
                cache_key = response_cache.cache_key(plan.request, plan.decision.max_output_tokens)
                cached = await accounting.responses.get(app.name, cache_key)
                if cached is not None:
                    return RouteCall(
                        self, app, plan, cached=cached, trace=trace, arrived_at=arrived_at
                    )
            with trace.span(SPAN_BUDGET_RESERVE):
                hold = await accounting.budgets.reserve(app, plan.hold_micro_usd)
        except QuotaExceeded as exc:
            self._finish(_refusal(app, plan, exc))
            raise
        return RouteCall(
            self, app, plan, hold=hold, cache_key=cache_key, trace=trace, arrived_at=arrived_at
        )

    def _finish(self, record: CallRecord) -> None:
        for observer in self._observers:
            observer.observe(record)


def _refusal(app: App, plan: Plan, error: QuotaExceeded) -> CallRecord:
    request = plan.request
    return CallRecord(
        request_id=request.request_id,
        started_at=time.time(),
        app=app.name,
        decision=plan.decision,
        usage=Usage(),
        cost_micro_usd=0,
        ttft_ms=None,
        latency_ms=0.0,
        served_from_cache=False,
        attempts=(),
        status=CallStatus.REFUSED,
        error=error.message,
        model="",
        provider="",
        finish_reason=CallStatus.REFUSED,
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


async def _replay(answer: CachedAnswer) -> AsyncGenerator[ProviderEvent, None]:
    """A cached answer as a provider stream: its deltas, then an end with no usage."""
    for event in answer.events:
        yield event
    yield StreamEnd(finish_reason=answer.finish_reason, usage=Usage(), model=answer.model)


class RouteCall:
    """One call in flight. Iterate `stream()` once; `summary` is set when it completes."""

    def __init__(
        self,
        pipeline: Pipeline,
        app: App,
        plan: Plan,
        *,
        hold: Hold | None = None,
        cache_key: str | None = None,
        cached: CachedAnswer | None = None,
        trace: CallTrace = NO_TRACE,
        arrived_at: float | None = None,
    ) -> None:
        self._pipeline = pipeline
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
        shadow = pipeline._shadow
        # The answer's text, kept only when the call will be shadow-graded.
        self._answer: list[str] | None = [] if shadow and shadow.wants(app, plan) else None

    def release(self) -> None:
        """Give back the budget hold of a call whose `stream()` never ran (the caller left
        before it began); does nothing once the stream has run."""
        if not self._finished:
            self._finished = True
            self._pipeline._accounting.after_call(AfterCall(self._app, self._hold, 0, 0))

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
        # The provider's own usage counts so far, for billing a stream that ends early.
        reported: Usage | None = None
        status, error = CallStatus.OK, ""
        fallback = FallbackStream(
            self.plan.targets, self._provider_request, breaker=self._pipeline.breaker
        )
        source = fallback.events() if self._cached is None else _replay(self._cached)
        recorder = AnswerRecorder() if self._cache_key is not None else None
        try:
            async with aclosing(source) as events:
                async for event in events:
                    if type(event) is StreamEnd:
                        end = event
                        continue
                    if type(event) is UsageReport:
                        reported = event.usage
                        continue
                    if first_at is None:
                        first_at = time.perf_counter()
                    if type(event) is TextDelta:
                        output_chars += len(event.text)
                        if self._answer is not None:
                            self._answer.append(event.text)
                    if recorder is not None:
                        recorder.add(event)  # type: ignore[arg-type]
                    yield event  # type: ignore[misc]
                    if self._first_sent_at is None:
                        # Resumed: gRPC has taken the first chunk and asks for the next.
                        self._first_sent_at = time.perf_counter()
        except BaseException as exc:
            status, error = _ending(exc, deadline)
            raise
        finally:
            self._settle(
                fallback=fallback,
                end=end,
                reported=reported,
                status=status,
                error=error,
                started_at=started_at,
                t0=t0,
                first_at=first_at,
                output_chars=output_chars,
                recorder=recorder,
            )

    def _settle(
        self,
        *,
        fallback: FallbackStream,
        end: StreamEnd | None,
        reported: Usage | None,
        status: str,
        error: str,
        started_at: float,
        t0: float,
        first_at: float | None,
        output_chars: int,
        recorder: AnswerRecorder | None = None,
    ) -> None:
        self._finished = True
        serving = fallback.serving
        if end is not None:
            usage = end.usage
        elif serving is not None:
            # The stream broke or was cancelled: bill what was produced, as the provider will,
            # from its own counts where it reported them (never more output than the request
            # allowed, which the provider enforces).
            usage = reported or Usage(input_tokens=self.plan.prompt.estimate)
            output = max(usage.output_tokens, tokens_for_length(output_chars))
            usage = replace(usage, output_tokens=min(output, self.plan.decision.max_output_tokens))
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
        self._pipeline._accounting.after_call(
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
