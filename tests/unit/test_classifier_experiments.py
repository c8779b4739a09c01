"""The helpers of the experiment script behind docs/CLASSIFIER.md's third series, on tiny
made-up outcome matrices (the script itself reads ../shared/data, the tests never do)."""

from __future__ import annotations

import numpy as np

from benchmarks.classifier_experiments import (
    STRONG,
    WEAK,
    dc_family,
    pair_counts,
    paired_bootstrap,
    rasch,
)

MODELS = ["aux-model", STRONG, WEAK, "hopeless-model"]


def test_pair_counts_compare_each_usable_weaker_model_with_the_strong_one() -> None:
    outcomes = np.array(
        [
            # aux, strong, weak, hopeless
            [0.0, 1.0, 0.0, 0.0],  # both usable weaker models fall short
            [1.0, 1.0, 0.0, 0.0],  # one falls short, one does not
            [1.0, 0.0, np.nan, 0.0],  # the aux model beats the strong one; weak missing
            [1.0, 1.0, 1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
        ]
    )
    falls_short, not_short, beats = pair_counts(outcomes, MODELS)
    # "hopeless-model" (mean 0) is below 0.6 x the strong model's mean: never a pair.
    assert falls_short.tolist() == [2.0, 1.0, 0.0, 0.0, 1.0]
    assert not_short.tolist() == [0.0, 1.0, 1.0, 2.0, 1.0]
    assert beats.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_rasch_orders_models_by_ability_and_prompts_by_difficulty() -> None:
    rng = np.random.default_rng(0)
    ability = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    difficulty = rng.normal(size=400)
    p = 1.0 / (1.0 + np.exp(-(ability[None, :] - difficulty[:, None])))
    outcomes = (rng.random(p.shape) < p).astype(float)
    outcomes[0, 1] = np.nan  # a missing outcome is skipped, not counted as wrong
    fitted_ability, fitted_difficulty = rasch(outcomes)
    assert list(np.argsort(fitted_ability)) == list(range(8))
    assert np.corrcoef(fitted_difficulty, difficulty)[0, 1] > 0.7


def test_paired_bootstrap_of_a_router_against_itself_is_zero() -> None:
    rng = np.random.default_rng(1)
    weak = (rng.random(200) < 0.6).astype(float)
    strong = (rng.random(200) < 0.8).astype(float)
    scores = rng.random(200)
    mean, low, high = paired_bootstrap(scores, scores, weak, strong)
    assert mean == low == high == 0.0


def test_dc_family_by_prompt_pattern() -> None:
    assert dc_family("Tom has 3 apples. How many apples does he have? \\boxed{}") == "math"
    assert dc_family('def add(a, b):\n    """Add two numbers."""\n') == "code"
    assert dc_family("There are 3 houses in a row. Clue(s): ...") == "logic"
    assert dc_family("A long passage. " * 60 + "What can be concluded?") == "reading"
    assert dc_family("who wrote the boys from brazil") == "shortqa"
