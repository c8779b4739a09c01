"""The evaluation report: a router's metrics next to the baselines', as one JSON-able dict.

Routers compared on the same rows of one weak/strong pair:

* the router under test (scores from an artifact, or out-of-fold scores during training);
* ``random``: uniform scores, each metric averaged over ``RANDOM_SEEDS`` seeds;
* ``prompt_length``: the prompt's length in characters as the score (longer = harder);
* ``always_weak`` / ``always_strong``: fixed policies. They have a single operating point,
  so RouteLLM's curve metrics do not apply to them: ``apgr`` is null, ``cpt50``/``cpt80`` is
  the share of strong calls they make if that point recovers the gap fraction (else null),
  and the "at 95%" figures are those of their point if it reaches 95% quality (else null).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from classifier.features import prompt_text
from training.costs import PairCosts
from training.dataset import OutcomeRow
from training.metrics import (
    RoutingCurve,
    apgr,
    call_performance_threshold,
    operating_point_at_quality,
    quantile_curve,
    threshold_sweep,
)

__all__ = ["QUALITY_TARGET", "RANDOM_SEEDS", "PairEvaluation", "evaluate_pair", "router_metrics"]

FloatArray = npt.NDArray[np.float64]
RANDOM_SEEDS = 100
QUALITY_TARGET = 0.95


@dataclass(frozen=True, slots=True)
class PairEvaluation:
    """Everything the report and the plot need."""

    report: dict[str, Any]
    curves: dict[str, list[tuple[float, float, float]]]  # name -> (share, quality, cost ratio)


def router_metrics(
    scores: FloatArray,
    weak: FloatArray,
    strong: FloatArray,
    costs: PairCosts,
    threshold: float | None = None,
) -> dict[str, Any]:
    """RouteLLM metrics of one scoring, plus the operating point at 95% quality (and at
    ``threshold``, when given)."""
    curve = quantile_curve(scores, weak, strong)
    at_target = operating_point_at_quality(
        scores, weak, strong, costs.weak, costs.strong, target=QUALITY_TARGET
    )
    metrics: dict[str, Any] = {
        "apgr": _finite(apgr(curve)),
        "cpt50": call_performance_threshold(curve, 0.5),
        "cpt80": call_performance_threshold(curve, 0.8),
        "strong_share_at_95": None if at_target is None else at_target.strong_share,
        "cost_ratio_at_95": None if at_target is None else at_target.cost_ratio,
        "quantile_curve": _curve_points(curve),
    }
    if threshold is not None:
        to_strong = scores >= threshold
        metrics["at_threshold"] = {
            "threshold": threshold,
            "strong_share": float(np.mean(to_strong)),
            "quality": float(np.mean(np.where(to_strong, strong, weak))),
            "quality_vs_strong": _ratio(
                np.mean(np.where(to_strong, strong, weak)), np.mean(strong)
            ),
            "cost_ratio": _ratio(
                np.sum(np.where(to_strong, costs.strong, costs.weak)), np.sum(costs.strong)
            ),
        }
    return metrics


def evaluate_pair(
    rows: Sequence[OutcomeRow],
    scores: FloatArray,
    weak: FloatArray,
    strong: FloatArray,
    costs: PairCosts,
    *,
    threshold: float | None = None,
) -> PairEvaluation:
    """The router's metrics and the baselines' on the same rows."""
    lengths = np.array([len(prompt_text(row.messages)) for row in rows], dtype=np.float64)
    baselines = {
        "random": _random_baseline(weak, strong, costs),
        "prompt_length": _without_curve(router_metrics(lengths, weak, strong, costs)),
        "always_weak": _fixed_policy(0.0, weak, strong, costs),
        "always_strong": _fixed_policy(1.0, weak, strong, costs),
    }
    router = router_metrics(scores, weak, strong, costs, threshold)
    report: dict[str, Any] = {
        "rows": len(rows),
        "weak_quality": float(np.mean(weak)),
        "strong_quality": float(np.mean(strong)),
        "weak_cost_usd": float(np.sum(costs.weak)),
        "strong_cost_usd": float(np.sum(costs.strong)),
        "cost_basis": costs.basis,
        "quality_target": QUALITY_TARGET,
        **router,
        "baselines": baselines,
    }
    curves = {
        "router": _sweep(scores, weak, strong, costs),
        "prompt_length": _sweep(lengths, weak, strong, costs),
    }
    return PairEvaluation(report=report, curves=curves)


def _random_baseline(weak: FloatArray, strong: FloatArray, costs: PairCosts) -> dict[str, Any]:
    runs = [
        router_metrics(np.random.default_rng(seed).random(len(weak)), weak, strong, costs)
        for seed in range(RANDOM_SEEDS)
    ]
    averaged: dict[str, Any] = {"seeds": RANDOM_SEEDS}
    for key in ("apgr", "cpt50", "cpt80", "strong_share_at_95", "cost_ratio_at_95"):
        values = [run[key] for run in runs if run[key] is not None]
        averaged[key] = float(np.mean(values)) if values else None
    return averaged


def _fixed_policy(
    strong_share: float, weak: FloatArray, strong: FloatArray, costs: PairCosts
) -> dict[str, Any]:
    to_strong = strong_share == 1.0
    quality = float(np.mean(strong if to_strong else weak))
    cost_ratio = _ratio(np.sum(costs.strong if to_strong else costs.weak), np.sum(costs.strong))
    weak_quality, strong_quality = float(np.mean(weak)), float(np.mean(strong))

    def recovers(fraction: float) -> float | None:
        goal = weak_quality + fraction * (strong_quality - weak_quality)
        return strong_share if quality >= goal else None

    reaches = quality >= QUALITY_TARGET * strong_quality - 1e-12
    return {
        "apgr": None,
        "cpt50": recovers(0.5),
        "cpt80": recovers(0.8),
        "strong_share_at_95": strong_share if reaches else None,
        "cost_ratio_at_95": cost_ratio if reaches else None,
        "strong_share": strong_share,
        "quality": quality,
        "cost_ratio": cost_ratio,
    }


def _sweep(
    scores: FloatArray, weak: FloatArray, strong: FloatArray, costs: PairCosts
) -> list[tuple[float, float, float]]:
    points = threshold_sweep(scores, weak, strong, costs.weak, costs.strong)
    return [(p.strong_share, p.quality, p.cost_ratio) for p in points]


def _curve_points(curve: RoutingCurve) -> list[dict[str, float]]:
    return [
        {"threshold": float(t), "strong_share": float(s), "quality": float(q)}
        for t, s, q in zip(curve.thresholds, curve.strong_share, curve.quality, strict=True)
    ]


def _without_curve(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items() if key != "quantile_curve"}


def _ratio(
    numerator: float | np.floating[Any], denominator: float | np.floating[Any]
) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None
