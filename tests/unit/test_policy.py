from __future__ import annotations

import pytest

from router_service.catalog import Catalog
from router_service.chat import Hints, TierPreference
from router_service.config import TaskConfig, Tier, load_config
from router_service.errors import InvalidRequest
from router_service.policy import BudgetState, Classification, PolicyInput, decide

CONFIG = load_config()
CATALOG = Catalog(CONFIG.models)


def inp(name: str = "summarization", **changes: object) -> PolicyInput:
    values: dict[str, object] = {
        "task_name": name,
        "task": CONFIG.tasks.get(name, CONFIG.tasks["default"]),
        "task_known": name in CONFIG.tasks,
        "hints": Hints(),
        "prompt_tokens": 500,
        "max_output_tokens": 1024,
    }
    values.update(changes)
    return PolicyInput(**values)  # type: ignore[arg-type]


def scored(score: float, recommended: float = 0.5) -> Classification:
    return Classification(
        score=score,
        version="test-1",
        recommended_threshold=recommended,
        thresholds={
            "quality_90": 0.3,
            "quality_95": 0.2,
            "quality_99": 0.1,
            "strong_share_5": 0.4,
            "strong_share_10": 0.35,
            "strong_share_50": 0.15,
        },
    )


def test_cheap_by_default_and_cheapest_model_first() -> None:
    d = decide(CATALOG, inp())
    assert d.tier is Tier.CHEAP
    assert d.model == "glm-5.2"  # cheaper than kimi-2.7 for this request
    assert d.candidates == ("glm-5.2", "kimi-2.7")
    assert "no classifier score: task default tier cheap" in d.reasons


def test_task_that_leans_frontier() -> None:
    d = decide(CATALOG, inp("code_review"))
    assert d.tier is Tier.FRONTIER
    assert d.model == "gpt-5.5"


def test_unknown_task_uses_default_class_and_says_so() -> None:
    d = decide(CATALOG, inp("poetry"))
    assert d.task == "default"
    assert d.reasons[0] == "task 'poetry' unknown: using the default class"


def test_difficulty_above_a_named_threshold_escalates() -> None:
    # summarization uses the artifact's strong_share_10 operating point (0.35 here).
    d = decide(CATALOG, inp(classification=scored(0.42)))
    assert d.tier is Tier.FRONTIER
    assert "difficulty 0.420 >= 0.350 (strong_share_10)" in d.reasons
    assert (d.difficulty, d.threshold, d.classifier_version) == (0.42, 0.35, "test-1")


def test_difficulty_below_threshold_stays_cheap() -> None:
    d = decide(CATALOG, inp(classification=scored(0.15)))
    assert d.tier is Tier.CHEAP
    assert "difficulty 0.150 < 0.350 (strong_share_10)" in d.reasons


def test_numeric_threshold() -> None:
    task = CONFIG.tasks["summarization"].model_copy(update={"threshold": 0.7})
    d = decide(CATALOG, inp(task=task, classification=scored(0.82)))
    assert d.tier is Tier.FRONTIER
    assert "difficulty 0.820 >= 0.700" in d.reasons


def test_leaning_frontier_tasks_use_a_lower_operating_point() -> None:
    # code_review uses strong_share_50 (0.15): the same score escalates there, not in extraction
    # (strong_share_5, 0.4).
    assert decide(CATALOG, inp("code_review", classification=scored(0.15))).tier is Tier.FRONTIER
    assert decide(CATALOG, inp("extraction", classification=scored(0.15))).tier is Tier.CHEAP


def test_recommended_threshold_when_task_sets_none() -> None:
    default = CONFIG.tasks["default"].model_copy(update={"threshold": None})
    d = decide(CATALOG, inp("default", task=default, classification=scored(0.45, recommended=0.4)))
    assert d.tier is Tier.FRONTIER
    assert d.threshold == 0.4
    assert "difficulty 0.450 >= 0.400 (recommended)" in d.reasons


@pytest.mark.parametrize(
    ("hints", "reason"),
    [
        (Hints(money_movement=True), "money movement escalates"),
        (Hints(tier=TierPreference.FRONTIER), "frontier required by hint"),
        (Hints(customer_escalation=True), "customer escalation escalates"),
    ],
)
def test_hints_escalate(hints: Hints, reason: str) -> None:
    d = decide(CATALOG, inp(hints=hints, classification=scored(0.0)))
    assert d.tier is Tier.FRONTIER
    assert reason in d.reasons


def test_cheap_hint_beats_difficulty_but_not_money_movement() -> None:
    d = decide(CATALOG, inp(hints=Hints(tier=TierPreference.CHEAP), classification=scored(0.99)))
    assert d.tier is Tier.CHEAP
    d = decide(
        CATALOG,
        inp(hints=Hints(tier=TierPreference.CHEAP, money_movement=True)),
    )
    assert d.tier is Tier.FRONTIER


def test_long_context_rule_and_context_window_overflow() -> None:
    d = decide(CATALOG, inp("code_review", prompt_tokens=40_000, classification=scored(0.0)))
    assert d.tier is Tier.FRONTIER
    assert "long context: ~40000 prompt tokens >= 32000" in d.reasons
    # Beyond every cheap model's window (256k): frontier, and only models that fit.
    d = decide(CATALOG, inp(prompt_tokens=300_000, classification=scored(0.0)))
    assert d.tier is Tier.FRONTIER
    assert d.candidates == ("gpt-5.5",)


def test_nothing_fits() -> None:
    with pytest.raises(InvalidRequest, match="no model can serve"):
        decide(CATALOG, inp(prompt_tokens=2_000_000))


def test_soft_budget_downgrades_unless_frontier_is_required() -> None:
    d = decide(CATALOG, inp(classification=scored(0.9), budget=BudgetState.SOFT))
    assert d.tier is Tier.CHEAP
    assert "budget past its soft threshold: downgraded to cheap" in d.reasons
    d = decide(CATALOG, inp(hints=Hints(money_movement=True), budget=BudgetState.SOFT))
    assert d.tier is Tier.FRONTIER


def test_forced_model() -> None:
    d = decide(CATALOG, inp(hints=Hints(force_model="claude-opus-4.8")))
    assert (d.model, d.tier, d.arm) == ("claude-opus-4.8", Tier.FRONTIER, "forced")
    with pytest.raises(InvalidRequest, match="unknown model 'gpt-2'"):
        decide(CATALOG, inp(hints=Hints(force_model="gpt-2")))


def test_unhealthy_models_go_last_and_warm_ones_first() -> None:
    d = decide(CATALOG, inp(unhealthy=frozenset({"glm-5.2"})))
    assert d.candidates == ("kimi-2.7", "glm-5.2")
    d = decide(CATALOG, inp(warm=frozenset({"kimi-2.7"})))
    assert d.model == "kimi-2.7"
    assert "kimi-2.7: prompt prefix warm in its provider's cache" in d.reasons


def test_exploration_flips_the_tier_with_its_propensity() -> None:
    explore = decide(
        CATALOG, inp(classification=scored(0.1), exploration_rate=0.1, exploration_draw=0.05)
    )
    assert (explore.tier, explore.arm, explore.propensity) == (Tier.FRONTIER, "explore", 0.1)
    policy = decide(
        CATALOG, inp(classification=scored(0.1), exploration_rate=0.1, exploration_draw=0.5)
    )
    assert (policy.tier, policy.arm, policy.propensity) == (Tier.CHEAP, "policy", 0.9)


def test_tools_need_a_capable_model() -> None:
    task = TaskConfig()
    d = decide(CATALOG, inp(task=task, needs_tools=True))
    assert all("tools" in CATALOG[name].capabilities for name in d.candidates)


@pytest.mark.parametrize(
    ("changes", "tier"),
    [
        ({"hints": Hints(customer_escalation=True)}, Tier.FRONTIER),
        ({"hints": Hints(tier=TierPreference.CHEAP)}, Tier.CHEAP),
        ({"prompt_tokens": 70_000}, Tier.FRONTIER),  # summarization's long-context rule
        ({"budget": BudgetState.SOFT}, Tier.CHEAP),  # never flipped to frontier past soft
    ],
)
def test_exploration_never_overrides_rules_preferences_or_a_soft_budget(
    changes: dict[str, object], tier: Tier
) -> None:
    d = decide(
        CATALOG,
        inp(classification=scored(0.1), exploration_rate=1.0, exploration_draw=0.0, **changes),
    )
    assert (d.tier, d.arm) == (tier, "policy")
    assert not any(r.startswith("exploration") for r in d.reasons)


def test_models_asked_for_more_output_than_they_give_are_left_out() -> None:
    config = CONFIG.models["glm-5.2"].model_copy(update={"max_output_tokens": 512})
    catalog = Catalog({**CONFIG.models, "glm-5.2": config})
    d = decide(catalog, inp(max_output_tokens=1024))
    assert d.candidates == ("kimi-2.7",)
    assert decide(catalog, inp(max_output_tokens=256)).model == "glm-5.2"
