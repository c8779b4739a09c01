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
from dataclasses import dataclass, replace
from typing import Protocol

from router_service.auth import App
from router_service.breaker import CircuitBreaker
from router_service.catalog import Catalog
from router_service.chat import ChatRequest
from router_service.cost import Usage
from router_service.errors import AllProvidersFailed, InvalidRequest, ProviderStreamBroken
from router_service.fallback import AttemptRecord, FallbackStream, Target
from router_service.policy import Classification, Decision, PolicyInput, decide
from router_service.prefix import canonicalize
from router_service.providers.base import (
    Provider,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from router_service.records import CallObserver, CallRecord, CallStatus
from router_service.tokens import PromptSize, measure_prompt, tokens_for_length

__all__ = ["CallSummary", "DifficultySource", "Pipeline", "Plan", "RouteCall"]


class DifficultySource(Protocol):
    def classify(self, messages: Sequence[tuple[str, str]]) -> Classification | None:
        """The difficulty of a prompt, or None when no classifier is available."""
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
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._catalog = catalog
        self._providers = providers
        self._difficulty = difficulty
        self._observers = tuple(observers)
        # Per-deployment health: read by the policy, written by the fallback logic.
        self.breaker = breaker if breaker is not None else CircuitBreaker()

    def plan(self, app: App, request: ChatRequest) -> Plan:
        """Decide where `request` goes. Pure apart from the classifier; never charges."""
        canonical = canonicalize(request)
        request = canonical.request
        task = app.tasks.get(request.task)
        known = task is not None
        if task is None:
            task = app.tasks["default"]
        prompt = measure_prompt(request)
        classification = None
        if self._difficulty is not None and not request.hints.force_model:
            classification = self._difficulty.classify(request.role_contents())
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
                unhealthy=self.breaker.unhealthy(self._catalog),
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

    def start(self, app: App, plan: Plan) -> RouteCall:
        return RouteCall(self, app, plan)

    def _finish(self, record: CallRecord) -> None:
        for observer in self._observers:
            observer.observe(record)


class RouteCall:
    """One call in flight. Iterate `stream()` once; `summary` is set when it completes."""

    def __init__(self, pipeline: Pipeline, app: App, plan: Plan) -> None:
        self._pipeline = pipeline
        self._app = app
        self._request = plan.request
        self.plan = plan
        self.summary: CallSummary | None = None

    def _provider_request(self, target: Target) -> ProviderRequest:
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
        try:
            async with aclosing(fallback.events()) as events:
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
                    yield event  # type: ignore[misc]
        except AllProvidersFailed as exc:
            status, error = CallStatus.FAILED, exc.message
            raise
        except InvalidRequest as exc:
            status, error = CallStatus.REJECTED, exc.message
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
                reported=reported,
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
        reported: Usage | None,
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
            # The stream broke or was cancelled: bill what was produced, as the provider will,
            # from its own counts where it reported them.
            usage = reported or Usage(input_tokens=self.plan.prompt.estimate)
            usage = replace(
                usage, output_tokens=max(usage.output_tokens, tokens_for_length(output_chars))
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
        self._pipeline._finish(
            CallRecord(
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
            )
        )
