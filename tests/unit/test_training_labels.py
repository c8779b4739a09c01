"""Labels for 0/1 and continuous scores, and the auxiliary-pair training weights."""

from __future__ import annotations

import numpy as np

from training.dataset import Outcome, OutcomeRow
from training.labels import falls_short, pair_outcomes, training_targets


def row(row_id: str, source: str = "bench/task", **scores: float) -> OutcomeRow:
    return OutcomeRow(
        id=row_id,
        source=source,
        split="train",
        task=None,
        messages=(("user", f"question {row_id}"),),
        outcomes={model: Outcome(score, None, None) for model, score in scores.items()},
    )


def test_binary_scores_label_weak_wrong_strong_right() -> None:
    weak = np.array([0.0, 0.0, 1.0, 1.0])
    strong = np.array([0.0, 1.0, 0.0, 1.0])
    assert falls_short(weak, strong).tolist() == [0, 1, 0, 0]


def test_continuous_scores_use_the_margin() -> None:
    weak = np.array([0.50, 0.50, 0.50, 0.9])
    strong = np.array([0.55, 0.70, 0.50, 0.2])
    assert falls_short(weak, strong).tolist() == [1, 1, 0, 0]
    assert falls_short(weak, strong, margin=0.1).tolist() == [0, 1, 0, 0]


def test_rows_lacking_either_model_are_skipped_and_counted() -> None:
    rows = [
        row("a", weak=0, strong=1),
        row("b", weak=1),
        row("c", strong=1),
        row("d", weak=1, strong=1),
    ]
    pair = pair_outcomes(rows, "weak", "strong")
    assert [r.id for r in pair.rows] == ["a", "d"]
    assert pair.skipped == 2
    assert pair.labels.tolist() == [1, 0]


def test_auxiliary_pairs_add_weight_per_weaker_model() -> None:
    rows = [
        row("a", weak=0, other=0, strong=1),
        row("b", weak=1, other=0, strong=1),
        row("c", weak=1, other=1, strong=1),
    ]
    targets = training_targets(
        rows, "weak", "strong", target_weight=2.0, auxiliary_weight=1.0, auxiliary_min_quality=0.0
    )
    # a: weak and other both fall short; b: only other; c: neither.
    assert targets.positive.tolist() == [3.0, 1.0, 0.0]
    assert targets.negative.tolist() == [0.0, 2.0, 3.0]
    assert targets.has_target_pair.all()


def test_sources_without_the_strong_model_use_their_best_model() -> None:
    rows = [
        row("a", source="other/x", small=0, big=1),
        row("b", source="other/y", small=1, big=1),
        row("c", source="bench/z", weak=0, strong=1),
    ]
    targets = training_targets(rows, "weak", "strong", auxiliary_min_quality=0.0)
    by_id = {r.id: i for i, r in enumerate(targets.rows)}
    assert targets.positive[by_id["a"]] == 1.0
    assert targets.negative[by_id["b"]] == 1.0
    assert not targets.has_target_pair[by_id["a"]]
    assert ("other", "big", ("small",)) in targets.pairs


def test_auxiliary_models_far_below_the_reference_are_left_out() -> None:
    rows = [row(str(i), weak=i % 2, hopeless=0, strong=1) for i in range(4)]
    targets = training_targets(rows, "weak", "strong", auxiliary_min_quality=0.3)
    assert targets.pairs == (("bench", "strong", ("weak",)),)
    assert (targets.positive + targets.negative).tolist() == [1.0] * 4


def test_auxiliary_weight_zero_trains_on_the_target_pair_alone() -> None:
    rows = [row("a", weak=1, other=0, strong=1), row("b", source="x/y", small=0, big=1)]
    targets = training_targets(rows, "weak", "strong", auxiliary_weight=0.0)
    assert [r.id for r in targets.rows] == ["a"]
    assert targets.positive.tolist() == [0.0]
    assert targets.negative.tolist() == [1.0]
