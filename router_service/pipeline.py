"""Routing a call: canonicalize, classify, decide, then admit it (rate limits, response cache,
budget hold).

The pure policy decides; this module does the I/O around it. `Pipeline.plan` is everything
`Explain` needs; `Pipeline.start` admits a planned call and returns a `RouteCall` (`call.py`)
that streams it; `Pipeline.route` does both for `Route`, sending the admission (rate limits and
the budget hold, one round trip; see `admission`) when the request arrives, so that it overlaps
the classification: the hold is then the dearest worst case of every model the decision could
name, and the decision, once made, keeps it or adjusts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from router_service import response_cache
from router_service.accounting import Accounting, AfterCall
from router_service.admission import Admission
from router_service.affinity import affinity_key, rendezvous_order
from router_service.auth import App
from router_service.breaker import CircuitBreaker, deployment_key
from router_service.call import CallServices, CallSummary, Plan, RouteCall, Shadowing, refusal
from router_service.catalog import Catalog
from router_service.chat import ChatRequest
from router_service.errors import (
    BudgetExhausted,
    InvalidRequest,
    QuotaExceeded,
    StoreUnavailable,
)
from router_service.exploration import Exploration
from router_service.fallback import Target
from router_service.policy import (
    BudgetState,
    Classification,
    Decision,
    PolicyInput,
    decide,
    reachable,
)
from router_service.prefix import CanonicalRequest, canonicalize
from router_service.providers.base import Provider
from router_service.records import CallObserver, CallRecord, invalid_call
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
        never charges. The decision says when the budget, as last read, is too small for the
        call's worst case."""
        canonical, prompt = _prepare(request)
        arrival = self._arrival(app, canonical.request, prompt)
        plan = await self._plan(app, canonical, prompt, arrival, trace=trace, explore=explore)
        budget = await self._accounting.budgets.snapshot(app)
        return plan if budget.fits(plan.hold_micro_usd) else _unaffordable(plan)

    async def route(
        self,
        app: App,
        request: ChatRequest,
        *,
        trace: CallTrace = NO_TRACE,
        arrived_at: float | None = None,
    ) -> RouteCall:
        """`plan`, then `start`, for `Route`: the admission goes to the store first, holding
        an upper bound of the call's worst case, and its round trip overlaps the
        classification."""
        canonical, prompt = _prepare(request)
        arrival = self._arrival(app, canonical.request, prompt)
        admission = self._admit_on_arrival(app, arrival, prompt)
        try:
            if admission is not None:
                await asyncio.sleep(0)  # let it send its request before the CPU-bound part
            plan = await self._plan(app, canonical, prompt, arrival, trace=trace, explore=True)
        except BaseException:
            if admission is not None:
                admission.abandon()
            raise
        trace.set_decision(plan.decision, plan.request.request_id)
        return await self.start(app, plan, trace=trace, arrived_at=arrived_at, admission=admission)

    def _arrival(self, app: App, request: ChatRequest, prompt: PromptSize) -> PolicyInput:
        """What the policy knows of `request` before classifying it and reading the store."""
        task = app.tasks.get(request.task)
        known = task is not None
        if task is None:
            task = app.tasks["default"]
        return PolicyInput(
            task_name=request.task,
            task=task,
            task_known=known,
            hints=request.hints,
            prompt_tokens=prompt.estimate,
            max_output_tokens=request.max_output_tokens or task.default_max_output_tokens,
            needs_tools=bool(request.tools),
        )

    def _admit_on_arrival(
        self, app: App, arrival: PolicyInput, prompt: PromptSize
    ) -> Admission | None:
        """The admission at the dearest worst case of every model the decision can name (see
        `policy.reachable`), which no decided worst case exceeds; None when no model can serve
        the request (the decision refuses it: there is nothing to admit)."""
        models = reachable(self._catalog, arrival)
        if not models:
            return None
        bound = self._dearest_worst_case(models, prompt, arrival.max_output_tokens)
        return self._accounting.admissions.begin(app, prompt.estimate, bound)

    async def _plan(
        self,
        app: App,
        canonical: CanonicalRequest,
        prompt: PromptSize,
        arrival: PolicyInput,
        *,
        trace: CallTrace,
        explore: bool,
    ) -> Plan:
        request = canonical.request
        classification = None
        if self._difficulty is not None and not request.hints.force_model:
            with trace.span(SPAN_CLASSIFY) as span:
                classification = self._difficulty.classify(request.role_contents())
                if classification is not None:
                    span.set_attribute(DIFFICULTY, classification.score)
                    span.set_attribute(CLASSIFIER_VERSION, classification.version)
        exploration = self._exploration
        explore_rate = 0.0 if exploration is None else exploration.exploration_rate(arrival.task)
        budget = await self._routing_budget(app)
        key = affinity_key(canonical)
        cacheable = key == canonical.prefix_hash
        warm = await self._warm_models(app, key) if cacheable else frozenset()
        decision = decide(
            self._catalog,
            replace(
                arrival,
                classification=classification,
                budget=budget,
                warm=warm,
                unhealthy=self.breaker.unhealthy(self._catalog),
                exploration_rate=explore_rate,
                exploration_draw=(
                    exploration.draw() if explore and exploration and explore_rate else 1.0
                ),
            ),
        )
        return Plan(
            request=request,
            decision=decision,
            prompt=prompt,
            prefix_hash=canonical.prefix_hash,
            targets=self._targets(decision, key),
            cacheable_prefix=cacheable,
            hold_micro_usd=self._worst_case(decision, prompt),
        )

    async def _routing_budget(self, app: App) -> BudgetState:
        """The budget state the decision follows. With the store away under fail_closed, the
        state last seen: the admission, sent on arrival, then refuses the call, and the
        refusal is recorded with this decision (`start`); `plan` (Explain) reads the budget
        again and is refused there."""
        budgets = self._accounting.budgets
        try:
            return (await budgets.snapshot(app)).state
        except StoreUnavailable:
            return budgets.last_state(app.name)

    async def _warm_models(self, app: App, key: str) -> frozenset[str]:
        """The models whose providers hold this prefix warm; none known while the store is
        away under fail_closed (the call is refused then, see `_routing_budget`)."""
        try:
            return await self._accounting.warmth.warm_models(app.name, key)
        except StoreUnavailable:
            return frozenset()

    def _worst_case(self, decision: Decision, prompt: PromptSize) -> int:
        """The most the call can cost whichever candidate serves it: the provable prompt-token
        bound, and every allowed output token, at the dearest candidate's prices."""
        return self._dearest_worst_case(decision.candidates, prompt, decision.max_output_tokens)

    def _dearest_worst_case(
        self, models: Iterable[str], prompt: PromptSize, max_output_tokens: int
    ) -> int:
        catalog = self._catalog
        return max(
            catalog[name].prices.worst_case_micro_usd(prompt.bound, max_output_tokens)
            for name in models
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
        admission: Admission | None = None,
    ) -> RouteCall:
        """Admit the call: rate limits and the budget hold (or the `admission` already under
        way, which holds at least the plan's worst case or is adjusted to it), and the
        response cache.

        Raises `QuotaExceeded` (nothing is held and a refusal is recorded) or, when the store
        is unreachable and the policy is fail-closed, `StoreUnavailable`. The caller must
        `release()` the call if it never iterates `stream()`. `arrived_at`
        (`time.perf_counter()` when the request arrived) lets the record say how much the
        gateway itself added to the time to first token.
        """
        accounting = self._accounting
        services = self._services
        if admission is None:
            admission = accounting.admissions.begin(app, plan.prompt.estimate, plan.hold_micro_usd)
        cache_key = None
        cached = None
        try:
            if response_cache.eligible(app, plan.request):
                cache_key = response_cache.cache_key(plan.request, plan.decision.max_output_tokens)
                cached = await accounting.responses.get(app.name, cache_key)
            # A cached replay is held too: the hard cutoff refuses every request.
            with trace.span(SPAN_BUDGET_RESERVE):
                hold = await admission.hold_for(plan.hold_micro_usd)
        except BaseException as exc:
            admission.abandon()
            if isinstance(exc, QuotaExceeded | StoreUnavailable):
                if isinstance(exc, BudgetExhausted):
                    plan = _unaffordable(plan)
                self._finish(refusal(app, plan, exc))
            raise
        if cached is not None:
            # A replay costs nothing: its hold goes back at once.
            accounting.after_call(AfterCall(app, hold, 0, 0))
            return RouteCall(services, app, plan, cached=cached, trace=trace, arrived_at=arrived_at)
        return RouteCall(
            services, app, plan, hold=hold, cache_key=cache_key, trace=trace, arrived_at=arrived_at
        )

    def refuse_invalid(self, app: App, error: InvalidRequest, request_id: str = "") -> None:
        """Record a `Route` call of `app` refused as invalid before any decision (by the
        request's checks or by the policy): a cost record with no decision, at no cost."""
        self._finish(invalid_call(app.name, request_id, error.message))

    def _finish(self, record: CallRecord) -> None:
        for observer in self._observers:
            observer.observe(record)


def _unaffordable(plan: Plan) -> Plan:
    """`plan` with its decision marked as refused at the hard cutoff, saying why."""
    decision = plan.decision
    if decision.budget is BudgetState.EXHAUSTED:
        return plan
    reason = (
        "budget: too little left this month for this request's worst case "
        f"(${plan.hold_micro_usd / 1e6:.6f}): the call will be refused"
    )
    return replace(
        plan,
        decision=replace(
            decision, budget=BudgetState.EXHAUSTED, reasons=(*decision.reasons, reason)
        ),
    )


def _prepare(request: ChatRequest) -> tuple[CanonicalRequest, PromptSize]:
    canonical = canonicalize(request)
    return canonical, measure_prompt(canonical.request)
