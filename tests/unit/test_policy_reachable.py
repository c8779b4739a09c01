"""`policy.reachable`: before the classifier runs, every model the decision can name.

The budget hold taken at a request's arrival is the dearest worst case over these models; it
covers the decided worst case only if no decision ever names a model outside them. Checked here
against `decide` itself, over random catalogs, tasks, hints and prompt sizes, and every later
fact (score, budget state, health, warmth, exploration) the decision reads.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from router_service.catalog import Catalog
from router_service.chat import Hints, TierPreference
from router_service.config import ModelConfig, TaskConfig, Tier, load_config
from router_service.errors import InvalidRequest
from router_service.policy import BudgetState, Classification, PolicyInput, decide, reachable

NAMES = ("m0", "m1", "m2", "m3", "m4")


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    names = NAMES[: draw(st.integers(1, len(NAMES)))]
    price = st.integers(0, 80).map(lambda n: Decimal(n) / 4)
    models = {
        name: ModelConfig(
            tier=draw(st.sampled_from(Tier)),
            prices={
                "input": draw(price),
                "cached_input": draw(price),
                "cache_write": draw(price),
                "output": draw(price),
            },
            context_window=draw(st.integers(500, 20_000)),
            max_output_tokens=draw(st.none() | st.integers(100, 4_000)),
            capabilities=("streaming", "tools") if draw(st.booleans()) else ("streaming",),
            deployments=[{"provider": "sim"}],
            fallbacks=draw(st.lists(st.sampled_from(names), max_size=2, unique=True)),
        )
        for name in names
    }
    return Catalog(models)


@st.composite
def arrivals(draw: st.DrawFn, catalog: Catalog) -> PolicyInput:
    """What is known when the request arrives."""
    task = TaskConfig(
        default_tier=draw(st.sampled_from(Tier)),
        threshold=draw(st.none() | st.floats(0, 1)),
        always_frontier=draw(st.booleans()),
        long_context_tokens=draw(st.none() | st.integers(1, 10_000)),
    )
    hints = Hints(
        tier=draw(st.sampled_from(TierPreference)),
        force_model=draw(st.just("") | st.sampled_from([*NAMES, "unknown"])),
        money_movement=draw(st.booleans()),
        customer_escalation=draw(st.booleans()),
    )
    return PolicyInput(
        task_name="t",
        task=task,
        task_known=draw(st.booleans()),
        hints=hints,
        prompt_tokens=draw(st.integers(1, 15_000)),
        max_output_tokens=draw(st.integers(1, 5_000)),
        needs_tools=draw(st.booleans()),
    )


@st.composite
def later_facts(draw: st.DrawFn, arrival: PolicyInput) -> PolicyInput:
    """The same request as the decision sees it, after classification and the store reads."""
    names = st.frozensets(st.sampled_from(NAMES))
    classification = draw(
        st.none()
        | st.builds(
            Classification,
            score=st.floats(0, 1),
            version=st.just("v"),
            recommended_threshold=st.floats(0, 1),
        )
    )
    return replace(
        arrival,
        classification=classification,
        budget=draw(st.sampled_from(BudgetState)),
        unhealthy=draw(names),
        warm=draw(names),
        exploration_rate=draw(st.sampled_from([0.0, 0.05, 0.5, 1.0])),
        exploration_draw=draw(st.floats(0, 1)),
    )


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_decided_candidate_is_reachable_at_arrival(data: st.DataObject) -> None:
    catalog = data.draw(catalogs())
    arrival = data.draw(arrivals(catalog))
    bound = reachable(catalog, arrival)
    for _ in range(6):
        inp = data.draw(later_facts(arrival))
        try:
            decision = decide(catalog, inp)
        except InvalidRequest:
            assert not bound  # decide refuses before the decision exists, whatever it learns
            continue
        assert set(decision.candidates) <= bound
        # So the dearest reachable worst case covers the decided one (`Pipeline._worst_case`).
        assert worst(catalog, bound, inp) >= worst(catalog, decision.candidates, inp)


def worst(catalog: Catalog, names: Collection[str], inp: PolicyInput) -> int:
    prompt_bound = 4 * inp.prompt_tokens + 7
    return max(
        catalog[n].prices.worst_case_micro_usd(prompt_bound, inp.max_output_tokens) for n in names
    )


def test_a_rule_that_fixes_the_tier_keeps_the_bound_to_that_tier() -> None:
    config = load_config()
    catalog = Catalog(config.models)
    arrival = PolicyInput(
        task_name="summarization",
        task=config.tasks["summarization"],
        task_known=True,
        hints=Hints(tier=TierPreference.CHEAP),
        prompt_tokens=500,
        max_output_tokens=1024,
    )
    cheap = {m.name for m in catalog.in_tier(Tier.CHEAP)}
    assert reachable(catalog, arrival) <= cheap
    # Left to the classifier, either tier can serve it.
    auto = replace(arrival, hints=Hints())
    assert reachable(catalog, auto) == {m.name for m in catalog}
