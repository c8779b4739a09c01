"""Routing a call: canonicalize, classify, decide, then admit it (rate limits, response cache,
budget hold).

The pure policy decides; this module does the I/O around it. `Pipeline.plan` is everything
`Explain` needs; `Pipeline.start` admits a planned call and returns a `RouteCall` (`call.py`)
that streams it; `Pipeline.route` does both for `Route`, overlapping the rate-limit round trip
with the classification and the budget reservation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from router_service import response_cache
from router_service.accounting import Accounting, AfterCall
from router_service.affinity import affinity_key, rendezvous_order
from router_service.auth import App
from router_service.breaker import CircuitBreaker, deployment_key
from router_service.call import CallServices, CallSummary, Plan, RouteCall, Shadowing, refusal
from router_service.catalog import Catalog
from router_service.chat import ChatRequest
from router_service.errors import QuotaExceeded, StoreUnavailable
from router_service.exploration import Exploration
from router_service.fallback import Target
from router_service.policy import BudgetState, Classification, Decision, PolicyInput, decide
from router_service.prefix import CanonicalRequest, canonicalize
from router_service.providers.base import Provider
from router_service.records import CallObserver, CallRecord
from router_service.telemetry.attributes import (
    CLASSIFIER_VERSION,
    DIFFICULTY,
    SPAN_BUDGET_RESERVE,
    SPAN_CLASSIFY,
)
from router_service.telemetry.tracing import NO_TRACE, CallTrace
from router_service.tokens import PromptSize, measure_prompt

__all__ = [
    "CallSummary",
    "DifficultySource",
    "Pipeline",
    "Plan",
    "RouteCall",
    "Shadowing",
]


class DifficultySource(Protocol):
    def classify(self, messages: Sequence[tuple[str, str]]) -> Classification | None:
        """The difficulty of a prompt, or None when no classifier is available."""
        ...


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
        self._services = CallServices(
            accounting=self._accounting, breaker=self.breaker, shadow=shadow, finish=self._finish
        )

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
        return await self._plan(app, *_prepare(request), trace=trace, explore=explore)

    async def route(
        self,
        app: App,
        request: ChatRequest,
        *,
        trace: CallTrace = NO_TRACE,
        arrived_at: float | None = None,
    ) -> RouteCall:
        """`plan`, then `start`, for `Route`: the rate-limit check goes to the store first and
        its round trip overlaps the classification and the budget reservation."""
        canonical, prompt = _prepare(request)
        admission = self._accounting.rate_limits.admission(app, prompt.estimate)
        if admission is not None:
            await asyncio.sleep(0)  # let it send its request before the CPU-bound part
        try:
            plan = await self._plan(app, canonical, prompt, trace=trace, explore=True)
        except BaseException:
            if admission is not None:
                self._accounting.rate_limits.give_back(app, admission, prompt.estimate)
            raise
        trace.set_decision(plan.decision, plan.request.request_id)
        return await self.start(app, plan, trace=trace, arrived_at=arrived_at, admission=admission)

    async def _plan(
        self,
        app: App,
        canonical: CanonicalRequest,
        prompt: PromptSize,
        *,
        trace: CallTrace,
        explore: bool,
    ) -> Plan:
        request = canonical.request
        task = app.tasks.get(request.task)
        known = task is not None
        if task is None:
            task = app.tasks["default"]
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
        admission: asyncio.Task[None] | None = None,
    ) -> RouteCall:
        """Admit the call: rate limits (or the `admission` check already under way), the
        response cache, the budget hold.

        Raises `QuotaExceeded` (nothing is held and a refusal is recorded) or, when the store
        is unreachable and the policy is fail-closed, `StoreUnavailable`. The caller must
        `release()` the call if it never iterates `stream()`. `arrived_at`
        (`time.perf_counter()` when the request arrived) lets the record say how much the
        gateway itself added to the time to first token.
        """
        accounting = self._accounting
        services = self._services
        cache_key = None
        hold = None
        if admission is None:
            admission = accounting.rate_limits.admission(app, plan.prompt.estimate)
        try:
            if response_cache.eligible(app, plan.request):
                cache_key = response_cache.cache_key(plan.request, plan.decision.max_output_tokens)
                cached = await accounting.responses.get(app.name, cache_key)
                if cached is not None:
                    if plan.decision.budget is BudgetState.EXHAUSTED:
                        # The hard cutoff refuses every request, a free replay too. The
                        # decision read a snapshot up to a second old; the store decides.
                        hold = await accounting.budgets.reserve(app, plan.hold_micro_usd)
                        accounting.after_call(AfterCall(app, hold, 0, 0))
                        hold = None
                    if admission is not None:
                        await admission
                    return RouteCall(
                        services, app, plan, cached=cached, trace=trace, arrived_at=arrived_at
                    )
            with trace.span(SPAN_BUDGET_RESERVE):
                hold = await accounting.budgets.reserve(app, plan.hold_micro_usd)
            if admission is not None:
                await admission
        except BaseException as exc:
            if admission is not None:
                accounting.rate_limits.give_back(app, admission, plan.prompt.estimate)
            if hold is not None:
                # Refused by the rate limit after the hold was taken: give the hold back.
                accounting.after_call(AfterCall(app, hold, 0, 0))
            if isinstance(exc, QuotaExceeded | StoreUnavailable):
                self._finish(refusal(app, plan, exc))
            raise
        return RouteCall(
            services, app, plan, hold=hold, cache_key=cache_key, trace=trace, arrived_at=arrived_at
        )

    def _finish(self, record: CallRecord) -> None:
        for observer in self._observers:
            observer.observe(record)


def _prepare(request: ChatRequest) -> tuple[CanonicalRequest, PromptSize]:
    canonical = canonicalize(request)
    return canonical, measure_prompt(canonical.request)
