"""Routing metrics, with RouteLLM's definitions (Ong et al. 2024, routellm/evals).

A router gives every prompt a score; routing the prompts whose score reaches a threshold to
the strong model and the rest to the weak one gives one operating point: the share of strong
calls and the mean quality. RouteLLM evaluates 11 such points, at the thresholds that cut the
scores into 10 equal-frequency bins (``pandas.qcut`` edges): a prompt goes strong when
``score >= edge`` for each edge but the last, and when ``score > edge`` for the last (which
sends nobody). Then, with the points sorted by strong-call share:

* APGR: the area under quality over strong-call share (trapezoid rule), as a fraction of the
  gap between the areas of always-weak and always-strong quality over the same range;
* CPT(x%): ``np.interp`` of the quality ``x% * (strong - weak) + weak`` over the points'
  qualities, giving a strong-call share.

The arithmetic is RouteLLM's own, so the figures agree to the last bit, not only to rounding
(checked against a re-implementation of routellm/evals with pandas 2.2, as RouteLLM ran it, in
thousands of random cases): the edges as pandas 2.x's ``qcut`` takes them
(``np.percentile`` of the quantiles times 100), shares and qualities in percent, computed as it
computes them. Shares are reported in [0, 1] here (RouteLLM prints percent). One extension:
``qcut`` refuses scores whose deciles repeat (RouteLLM then raises); here repeated edges are
kept, so constant or heavily tied scores still give a curve.

Beyond RouteLLM, ``operating_point_at_quality`` sweeps every distinct threshold for the
cheapest point reaching a quality target (95% of the strong model's by default) and reports
its strong-call share and its cost relative to always calling the strong model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "OperatingPoint",
    "RoutingCurve",
    "apgr",
    "call_performance_threshold",
    "operating_point_at_quality",
    "quantile_curve",
    "threshold_sweep",
]

FloatArray = npt.NDArray[np.float64]
QUANTILE_BINS = 10


@dataclass(frozen=True, slots=True)
class RoutingCurve:
    """Operating points sorted by strong-call share (ascending), as fractions, with the same
    in percent as RouteLLM computes them (its metrics are computed from those)."""

    thresholds: FloatArray
    strong_share: FloatArray
    quality: FloatArray
    weak_quality: float
    strong_quality: float
    strong_percent: FloatArray
    quality_percent: FloatArray
    weak_percent: float
    strong_model_percent: float


def quantile_curve(
    scores: FloatArray, weak: FloatArray, strong: FloatArray, bins: int = QUANTILE_BINS
) -> RoutingCurve:
    """RouteLLM's operating points: thresholds at the score quantiles 0, 1/bins, ..., 1."""
    scores, weak, strong = _checked(scores, weak, strong)
    # pandas 2.x's qcut: np.percentile at the quantiles times 100 (np.quantile can differ by
    # one floating-point step, which moves a prompt when an edge falls on a score).
    edges = np.percentile(scores, np.linspace(0.0, 1.0, bins + 1) * 100.0)
    n = len(scores)
    shares, qualities = [], []
    for index, edge in enumerate(edges):
        to_strong = scores >= edge if index != len(edges) - 1 else scores > edge
        # As routellm/evals computes them: counts over the total, a Python sum of the
        # results over their number, each times 100.
        shares.append(np.count_nonzero(to_strong) / n * 100)
        qualities.append(sum(np.where(to_strong, strong, weak).tolist()) / n * 100)
    # A stable sort keeps RouteLLM's order among equal shares (pandas sorts 11 rows stably).
    order = np.argsort(np.asarray(shares), kind="stable")
    percent = np.asarray(shares, dtype=np.float64)[order]
    quality_percent = np.asarray(qualities, dtype=np.float64)[order]
    return RoutingCurve(
        thresholds=edges[order],
        strong_share=percent / 100,
        quality=quality_percent / 100,
        weak_quality=float(np.mean(weak)),
        strong_quality=float(np.mean(strong)),
        strong_percent=percent,
        quality_percent=quality_percent,
        weak_percent=float(np.mean(weak)) * 100,
        strong_model_percent=float(np.mean(strong)) * 100,
    )


def apgr(curve: RoutingCurve) -> float:
    """Average performance gap recovered; NaN when the two models have equal quality."""
    x = curve.strong_percent / 100
    count = len(x)
    area = float(np.trapezoid(curve.quality_percent, x))
    weak_area = float(np.trapezoid(np.full(count, curve.weak_percent), x))
    strong_area = float(np.trapezoid(np.full(count, curve.strong_model_percent), x))
    if strong_area == weak_area:
        return float("nan")
    return (area - weak_area) / (strong_area - weak_area)


def call_performance_threshold(curve: RoutingCurve, fraction: float) -> float:
    """CPT: the strong-call share at which ``fraction`` of the quality gap is recovered."""
    weak, strong = curve.weak_percent, curve.strong_model_percent
    target = fraction * (strong - weak) + weak
    return float(np.interp(target, curve.quality_percent, curve.strong_percent)) / 100


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """One threshold's outcome: scores >= threshold go to the strong model."""

    threshold: float
    strong_share: float
    quality: float
    cost_ratio: float


def threshold_sweep(
    scores: FloatArray,
    weak: FloatArray,
    strong: FloatArray,
    weak_cost: FloatArray,
    strong_cost: FloatArray,
) -> list[OperatingPoint]:
    """Every achievable operating point, from all-weak to all-strong.

    Prompts with equal scores cannot be split by a threshold, so points exist only between
    distinct scores. Cost is relative to sending every prompt to the strong model.
    """
    scores, weak, strong = _checked(scores, weak, strong)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    quality_gain = np.concatenate([[0.0], np.cumsum((strong - weak)[order])])
    cost_gain = np.concatenate([[0.0], np.cumsum((strong_cost - weak_cost)[order])])
    n = len(scores)
    # k strong calls are achievable when k = 0, k = n, or the k-th and (k+1)-th scores differ.
    ks = [0, *(k for k in range(1, n) if sorted_scores[k - 1] != sorted_scores[k]), n]
    total_strong_cost = float(np.sum(strong_cost))
    points = []
    for k in ks:
        threshold = float(sorted_scores[k - 1]) if k > 0 else float("inf")
        cost = float(np.sum(weak_cost)) + float(cost_gain[k])
        points.append(
            OperatingPoint(
                threshold=threshold,
                strong_share=k / n,
                quality=(float(np.sum(weak)) + float(quality_gain[k])) / n,
                cost_ratio=cost / total_strong_cost if total_strong_cost > 0 else float("nan"),
            )
        )
    return points


def operating_point_at_quality(
    scores: FloatArray,
    weak: FloatArray,
    strong: FloatArray,
    weak_cost: FloatArray,
    strong_cost: FloatArray,
    *,
    target: float = 0.95,
) -> OperatingPoint | None:
    """The fewest strong calls reaching ``target`` x the strong model's mean quality; None if
    no threshold does (possible only when the strong model is not the better one)."""
    goal = target * float(np.mean(strong))
    for point in threshold_sweep(scores, weak, strong, weak_cost, strong_cost):
        # A hair of tolerance: mean qualities are sums of floats.
        if point.quality >= goal - 1e-12:
            return point
    return None


def _checked(
    scores: FloatArray, weak: FloatArray, strong: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    scores = np.asarray(scores, dtype=np.float64)
    weak = np.asarray(weak, dtype=np.float64)
    strong = np.asarray(strong, dtype=np.float64)
    if not (scores.ndim == 1 and scores.shape == weak.shape == strong.shape):
        raise ValueError("scores, weak and strong must be 1-D arrays of one length")
    if len(scores) == 0:
        raise ValueError("no prompts to evaluate")
    return scores, weak, strong
