"""The routing policy: a pure function from what is known about a request to a decision.

Scores, config and budget state go in; a decision with its reasons comes out. Nothing here does
I/O or reads a clock, so every rule is tested directly and `Explain` shows exactly what `Route`
would do.

The tier is decided first (hard constraints, hints, task rules, difficulty, budget, exploration),
then the models of that tier are ordered: those that fit the prompt and support what it needs,
healthy before unhealthy, prompt-cache-warm before cold, then by what this request would cost.

`reachable` answers before the classifier has run: every model `decide` may put among a
request's candidates, whatever the score, budget state, prefix warmth, health and exploration
draw turn out to be (the budget hold taken at a request's arrival covers the dearest of them).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from router_service.catalog import Catalog, CatalogModel
from router_service.chat import Hints, TierPreference
from router_service.config import TaskConfig, Tier
from router_service.errors import InvalidRequest

__all__ = ["BudgetState", "Classification", "Decision", "PolicyInput", "decide", "reachable"]

DEFAULT_THRESHOLD = 0.5


class BudgetState(StrEnum):
    OK = "ok"
    # Past the soft threshold: frontier only when the request requires it.
    SOFT = "soft"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class Classification:
    score: float
    version: str
    recommended_threshold: float
    # The artifact's named operating points, e.g. {"quality_95": 0.16}.
    thresholds: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicyInput:
    task_name: str
    task: TaskConfig
    # False when the task was unknown and `task` is the default class.
    task_known: bool
    hints: Hints
    prompt_tokens: int
    max_output_tokens: int
    needs_tools: bool = False
    classification: Classification | None = None
    budget: BudgetState = BudgetState.OK
    unhealthy: Set[str] = frozenset()
    # Models whose provider already holds this request's prompt prefix in its cache.
    warm: Set[str] = frozenset()
    # Share of this task's traffic sent to the other tier, and this request's uniform draw.
    exploration_rate: float = 0.0
    exploration_draw: float = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    task: str
    tier: Tier
    model: str
    # The models to try in order; the first is `model`.
    candidates: tuple[str, ...]
    difficulty: float | None
    threshold: float | None
    classifier_version: str
    reasons: tuple[str, ...]
    max_output_tokens: int
    arm: str = "policy"
    # Probability that the policy sends a request like this one to `tier`.
    propensity: float = 1.0
    budget: BudgetState = BudgetState.OK


def _fits(model: CatalogModel, inp: PolicyInput) -> bool:
    if inp.prompt_tokens + inp.max_output_tokens > model.context_window:
        return False
    if model.max_output_tokens is not None and inp.max_output_tokens > model.max_output_tokens:
        return False
    return not inp.needs_tools or "tools" in model.capabilities


def _order(models: tuple[CatalogModel, ...], inp: PolicyInput) -> list[CatalogModel]:
    def key(m: CatalogModel) -> tuple[bool, bool, int, str]:
        cost = m.prices.worst_case_micro_usd(inp.prompt_tokens, inp.max_output_tokens)
        return (m.name in inp.unhealthy, m.name not in inp.warm, cost, m.name)

    return sorted((m for m in models if _fits(m, inp)), key=key)


def _forced(catalog: Catalog, inp: PolicyInput, reasons: list[str]) -> Decision:
    model = catalog.get(inp.hints.force_model)
    if model is None:
        raise InvalidRequest(f"hints.force_model: unknown model {inp.hints.force_model!r}")
    if not _fits(model, inp):
        raise InvalidRequest(
            f"hints.force_model: {model.name} cannot serve this request "
            f"(~{inp.prompt_tokens} prompt tokens + {inp.max_output_tokens} output, "
            f"context window {model.context_window}"
            + (
                f", at most {model.max_output_tokens} output tokens"
                if model.max_output_tokens is not None
                else ""
            )
            + (", no tool support" if inp.needs_tools and "tools" not in model.capabilities else "")
            + ")"
        )
    reasons.append(f"model {model.name} forced by hint")
    fallbacks = [f for f in model.fallbacks if _fits(catalog[f], inp)]
    return _decision(inp, model.tier, [model.name, *fallbacks], reasons, arm="forced")


def decide(catalog: Catalog, inp: PolicyInput) -> Decision:
    """The tier, model and fallback order for one request, with the reasons for each choice."""
    reasons: list[str] = []
    if not inp.task_known:
        reasons.append(f"task {inp.task_name!r} unknown: using the default class")
    if inp.hints.force_model:
        return _forced(catalog, inp, reasons)

    cheap = _order(catalog.in_tier(Tier.CHEAP), inp)
    frontier = _order(catalog.in_tier(Tier.FRONTIER), inp)
    if not cheap and not frontier:
        raise InvalidRequest(
            f"no model can serve this request: ~{inp.prompt_tokens} prompt tokens + "
            f"{inp.max_output_tokens} output tokens"
            + (" with tools" if inp.needs_tools else "")
            + " exceeds every model's context window or capabilities"
        )

    tier, basis = _choose_tier(inp, bool(cheap), reasons)
    arm, propensity = "policy", 1.0
    if basis is not _Basis.REQUIRED and cheap and frontier:
        if inp.budget is BudgetState.SOFT and tier is Tier.FRONTIER:
            tier = Tier.CHEAP
            reasons.append("budget past its soft threshold: downgraded to cheap")
        elif (
            # Only the learned choice is explored: a rule, a caller's preference or a
            # budget past its soft threshold is never overridden by chance.
            basis is _Basis.LEARNED and inp.budget is BudgetState.OK and inp.exploration_rate > 0
        ):
            if inp.exploration_draw < inp.exploration_rate:
                tier = Tier.CHEAP if tier is Tier.FRONTIER else Tier.FRONTIER
                arm, propensity = "explore", inp.exploration_rate
                reasons.append(f"exploration: routed to {tier.value} (p={inp.exploration_rate:g})")
            else:
                propensity = 1.0 - inp.exploration_rate
    if tier is Tier.FRONTIER and not frontier:
        tier = Tier.CHEAP
        reasons.append("no frontier model can serve this request: using cheap")
    if inp.budget is BudgetState.EXHAUSTED:
        reasons.append("budget exhausted: the call will be refused")

    ordered = cheap if tier is Tier.CHEAP else frontier
    chosen = ordered[0]
    reasons.append(_why_model(chosen, tier, inp))
    names = [m.name for m in ordered]
    for model in ordered:
        names += [f for f in model.fallbacks if f not in names and _fits(catalog[f], inp)]
    return _decision(inp, tier, names, reasons, arm=arm, propensity=propensity)


def reachable(catalog: Catalog, inp: PolicyInput) -> frozenset[str]:
    """Every model `decide(catalog, inp')` can name among its candidates, for every `inp'`
    that differs from `inp` only in what is learned later: `classification`, `budget`,
    `unhealthy`, `warm`, `exploration_rate` and `exploration_draw`. Empty when `decide` raises
    for every such input (an unknown or unfit forced model, nothing that fits).

    Why this is every such model: the candidates are the fitting models of one tier (the order
    varies, the set does not) and their fitting fallbacks, or, with a forced model, it and its
    fitting fallbacks; `_fits` reads only the prompt size, the output allowance and the tools.
    The tier comes from `_choose_tier`, whose rules before the classifier's score read none of
    the later facts: a REQUIRED tier is final (but for the frontier-to-cheap step when no
    frontier model fits), a RULE may be downgraded from frontier to cheap by the budget, and a
    LEARNED tier may be either (the score, the default tier, exploration)."""
    if inp.hints.force_model:
        model = catalog.get(inp.hints.force_model)
        if model is None or not _fits(model, inp):
            return frozenset()
        return frozenset([model.name, *(f for f in model.fallbacks if _fits(catalog[f], inp))])
    fitting = {
        tier: [m for m in catalog.in_tier(tier) if _fits(m, inp)]
        for tier in (Tier.CHEAP, Tier.FRONTIER)
    }
    if not fitting[Tier.CHEAP] and not fitting[Tier.FRONTIER]:
        return frozenset()
    tier, basis = _choose_tier(inp, bool(fitting[Tier.CHEAP]), [])
    tiers = {tier}
    if basis is _Basis.LEARNED or (basis is _Basis.RULE and tier is Tier.FRONTIER):
        tiers.add(Tier.CHEAP)
        tiers.add(Tier.FRONTIER)
    if not fitting[Tier.FRONTIER]:
        tiers = {Tier.CHEAP}
    names: set[str] = set()
    for reached in tiers:
        for model in fitting[reached]:
            names.add(model.name)
            names.update(f for f in model.fallbacks if _fits(catalog[f], inp))
    return frozenset(names)


def _why_model(chosen: CatalogModel, tier: Tier, inp: PolicyInput) -> str:
    if chosen.name in inp.warm:
        return f"{chosen.name}: prompt prefix warm in its provider's cache"
    if chosen.name in inp.unhealthy:
        return f"{chosen.name}: every {tier.value} model is unhealthy; trying anyway"
    return f"{chosen.name}: cheapest healthy {tier.value} model for this request"


class _Basis(Enum):
    """What decided the tier: whether budget downgrades and exploration may change it."""

    # Frontier is required (nothing cheap fits, money movement, a frontier hint): nothing may.
    REQUIRED = "required"
    # A rule or the caller's preference: a soft budget may downgrade it; exploration may not.
    RULE = "rule"
    # The difficulty score, or the task's default tier without one: both may.
    LEARNED = "learned"


def _choose_tier(inp: PolicyInput, cheap_fits: bool, reasons: list[str]) -> tuple[Tier, _Basis]:
    """The tier before budget and exploration, and what decided it."""
    hints, task = inp.hints, inp.task
    if not cheap_fits:
        reasons.append(
            f"no cheap model fits ~{inp.prompt_tokens} prompt tokens + "
            f"{inp.max_output_tokens} output" + (" with tools" if inp.needs_tools else "")
        )
        return Tier.FRONTIER, _Basis.REQUIRED
    if hints.money_movement:
        reasons.append("money movement escalates")
        return Tier.FRONTIER, _Basis.REQUIRED
    if hints.tier is TierPreference.FRONTIER:
        reasons.append("frontier required by hint")
        return Tier.FRONTIER, _Basis.REQUIRED
    if hints.tier is TierPreference.CHEAP:
        reasons.append("cheap requested by hint")
        return Tier.CHEAP, _Basis.RULE
    if hints.customer_escalation:
        reasons.append("customer escalation escalates")
        return Tier.FRONTIER, _Basis.RULE
    if task.always_frontier:
        reasons.append(f"task {inp.task_name} escalates")
        return Tier.FRONTIER, _Basis.RULE
    if task.long_context_tokens is not None and inp.prompt_tokens >= task.long_context_tokens:
        reasons.append(
            f"long context: ~{inp.prompt_tokens} prompt tokens >= {task.long_context_tokens}"
        )
        return Tier.FRONTIER, _Basis.RULE
    scored = inp.classification
    if scored is None:
        reasons.append(f"no classifier score: task default tier {task.default_tier.value}")
        return task.default_tier, _Basis.LEARNED
    threshold, named = _threshold(inp)
    which = f" ({named})" if named else ""
    if scored.score >= threshold:
        reasons.append(f"difficulty {scored.score:.3f} >= {threshold:.3f}{which}")
        return Tier.FRONTIER, _Basis.LEARNED
    reasons.append(f"difficulty {scored.score:.3f} < {threshold:.3f}{which}")
    return Tier.CHEAP, _Basis.LEARNED


def _threshold(inp: PolicyInput) -> tuple[float, str]:
    """The task's threshold as a number, and the operating point it names, if it names one."""
    configured = inp.task.threshold
    scored = inp.classification
    if isinstance(configured, float | int):
        return float(configured), ""
    if scored is None:
        return DEFAULT_THRESHOLD, ""
    if configured is not None and configured in scored.thresholds:
        return scored.thresholds[configured], configured
    # No threshold configured (or one the artifact lacks, which the runtime refuses to load).
    return scored.recommended_threshold, "recommended"


def _decision(
    inp: PolicyInput,
    tier: Tier,
    candidates: list[str],
    reasons: list[str],
    *,
    arm: str,
    propensity: float = 1.0,
) -> Decision:
    scored = inp.classification
    return Decision(
        task=inp.task_name if inp.task_known else "default",
        tier=tier,
        model=candidates[0],
        candidates=tuple(candidates),
        difficulty=None if scored is None else scored.score,
        threshold=None if scored is None else _threshold(inp)[0],
        classifier_version="" if scored is None else scored.version,
        reasons=tuple(reasons),
        max_output_tokens=inp.max_output_tokens,
        arm=arm,
        propensity=propensity,
        budget=inp.budget,
    )
