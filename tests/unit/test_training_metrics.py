"""RouteLLM metrics against hand-computed cases, and invariants that must hold for any data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.metrics import (
    apgr,
    call_performance_threshold,
    operating_point_at_quality,
    quantile_curve,
    threshold_sweep,
)

# Four prompts, the two hardest ones (highest scores) are where the weak model fails.
SCORES = np.array([4.0, 3.0, 2.0, 1.0])
WEAK = np.array([0.0, 0.0, 1.0, 1.0])
STRONG = np.array([1.0, 1.0, 1.0, 1.0])


def test_quantile_curve_matches_hand_computation() -> None:
    # Edges at the deciles of [1, 2, 3, 4]: 1, 1.3, ..., 3.7, 4. ">=" for all but the last
    # edge, ">" for the last, which sends nobody to the strong model.
    curve = quantile_curve(SCORES, WEAK, STRONG)
    assert curve.strong_share.tolist() == [0.0, *[0.25] * 3, *[0.5] * 3, *[0.75] * 3, 1.0]
    assert curve.quality.tolist() == [0.5, *[0.75] * 3, *[1.0] * 7]
    assert (curve.weak_quality, curve.strong_quality) == (0.5, 1.0)


def test_apgr_matches_hand_computation() -> None:
    # Area: 0.25 * (0.5 + 0.75) / 2 + 0.25 * (0.75 + 1) / 2 + 0.5 * 1 = 0.875;
    # weak area 0.5, strong area 1.0, so APGR = (0.875 - 0.5) / 0.5.
    assert apgr(quantile_curve(SCORES, WEAK, STRONG)) == pytest.approx(0.75)


def test_cpt_matches_hand_computation() -> None:
    curve = quantile_curve(SCORES, WEAK, STRONG)
    # 50% of the gap is quality 0.75, first reached at a quarter of strong calls.
    assert call_performance_threshold(curve, 0.5) == pytest.approx(0.25)
    # 80% is quality 0.9: between (0.25, 0.75) and (0.5, 1.0), at 0.25 + 0.15 / 0.25 * 0.25.
    assert call_performance_threshold(curve, 0.8) == pytest.approx(0.40)


def test_operating_point_at_95_percent_quality() -> None:
    weak_cost = np.full(4, 0.1)
    strong_cost = np.ones(4)
    point = operating_point_at_quality(SCORES, WEAK, STRONG, weak_cost, strong_cost, target=0.95)
    assert point is not None
    # Two strong calls reach quality 1.0; cost 2 * 1 + 2 * 0.1 out of 4.
    assert point.strong_share == 0.5
    assert point.threshold == 3.0
    assert point.quality == 1.0
    assert point.cost_ratio == pytest.approx(0.55)


def test_ties_cannot_be_split_by_a_threshold() -> None:
    points = threshold_sweep(np.zeros(3), np.zeros(3), np.ones(3), np.zeros(3), np.ones(3))
    assert [p.strong_share for p in points] == [0.0, 1.0]


def test_random_scores_average_to_half() -> None:
    rng = np.random.default_rng(7)
    weak = (rng.random(2_000) < 0.6).astype(float)
    strong = np.maximum(weak, (rng.random(2_000) < 0.5).astype(float))
    values = [apgr(quantile_curve(rng.random(2_000), weak, strong)) for _ in range(30)]
    assert np.mean(values) == pytest.approx(0.5, abs=0.02)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one length"):
        quantile_curve(np.zeros(3), np.zeros(2), np.zeros(3))


outcomes = st.lists(
    st.tuples(st.sampled_from([0.0, 1.0, 0.25, 0.5]), st.sampled_from([0.0, 1.0, 0.75])),
    min_size=2,
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(pairs=outcomes, seed=st.integers(0, 2**16))
def test_scaling_scores_changes_nothing(pairs: list[tuple[float, float]], seed: int) -> None:
    weak, strong = (np.array(column) for column in zip(*pairs, strict=True))
    scores = np.random.default_rng(seed).integers(0, 10, len(weak)).astype(float)
    original, scaled = (
        quantile_curve(scores, weak, strong),
        quantile_curve(2 * scores, weak, strong),
    )
    assert np.array_equal(original.quality, scaled.quality)
    assert np.array_equal(original.strong_share, scaled.strong_share)


@settings(max_examples=80, deadline=None)
@given(pairs=outcomes)
def test_oracle_recovers_at_least_half_and_cpt_is_a_share(pairs: list[tuple[float, float]]) -> None:
    weak, strong = (np.array(column) for column in zip(*pairs, strict=True))
    if strong.mean() <= weak.mean():
        return  # APGR is about a gap to recover; none here
    curve = quantile_curve(strong - weak, weak, strong)
    # Ordering by the true gain gives a concave quality curve, above the random chord.
    assert apgr(curve) >= 0.5 - 1e-9
    for fraction in (0.5, 0.8):
        assert 0.0 <= call_performance_threshold(curve, fraction) <= 1.0


@settings(max_examples=80, deadline=None)
@given(pairs=outcomes, seed=st.integers(0, 2**16))
def test_sweep_spans_all_weak_to_all_strong(pairs: list[tuple[float, float]], seed: int) -> None:
    weak, strong = (np.array(column) for column in zip(*pairs, strict=True))
    scores = np.random.default_rng(seed).random(len(weak)).round(1)
    points = threshold_sweep(scores, weak, strong, np.full(len(weak), 0.1), np.ones(len(weak)))
    assert points[0].quality == pytest.approx(weak.mean())
    assert points[-1].quality == pytest.approx(strong.mean())
    assert points[-1].cost_ratio == pytest.approx(1.0)
    assert all(a.strong_share < b.strong_share for a, b in itertools.pairwise(points))
    target = operating_point_at_quality(
        scores, weak, strong, np.full(len(weak), 0.1), np.ones(len(weak))
    )
    assert target is not None
    assert target.quality >= 0.95 * strong.mean() - 1e-9


def test_edges_fall_where_routellm_puts_them() -> None:
    # 21 scores, where np.quantile's deciles and pandas 2.x qcut's (np.percentile) differ by a
    # floating-point step and one lands on a score: the expected figures are routellm/evals'
    # own (its code re-run with pandas 2.2.3); np.quantile's edges gave APGR 0.4702.
    scores = np.array(
        [
            *(0.15, 0.44, 0.24, 0.4, 0.1, 0.97, 0.22, 0.67, 0.3, 0.87, 0.66),
            *(0.13, 0.85, 0.94, 0.9, 0.57, 0.15, 0.19, 0.93, 0.55, 0.18),
        ]
    )
    weak = np.array([0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0], dtype=float)
    strong = np.array([1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0, 1], dtype=float)
    curve = quantile_curve(scores, weak, strong)
    assert apgr(curve) == pytest.approx(0.4821428571428567, abs=1e-12)
    assert call_performance_threshold(curve, 0.5) == pytest.approx(0.6666666666666669, abs=1e-12)
    assert call_performance_threshold(curve, 0.8) == pytest.approx(0.8285714285714287, abs=1e-12)
