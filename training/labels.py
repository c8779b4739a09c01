"""Training labels: does the weak model's answer fall short of the strong model's?

For a weak/strong pair a prompt is labelled 1 when ``strong score - weak score > margin``.
With 0/1 scores (RouterBench) that is "weak wrong, strong right"; with continuous scores
(DC-Router's 0..1 grades) the margin says how much worse counts as falling short (default:
any amount).

The classifier learns better from more than one pair. Besides the target pair, each source
of outcomes contributes *auxiliary pairs*: its reference model (the target strong model where
the source has it, else the source's best model by mean score) against every model that scores
lower on average, but at least ``auxiliary_min_quality`` times the reference's mean. Models far
below (DC-Router's ChatQA models solve under a fifth of its prompts) fail for reasons of their
own, such as answer format, and their failures say little about which prompts are hard.
Summed over pairs, each prompt gets a positive and a negative weight; a
weighted logistic regression on those is the maximum-likelihood fit of "a weaker model falls
short here", which is how hard the prompt is rather than which pair happened to be logged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.dataset import OutcomeRow

__all__ = ["PairOutcomes", "TrainingTargets", "falls_short", "pair_outcomes", "training_targets"]

FloatArray = npt.NDArray[np.float64]


def falls_short(weak: FloatArray, strong: FloatArray, margin: float = 0.0) -> npt.NDArray[np.int8]:
    """1 where the weak score is more than ``margin`` below the strong score, else 0."""
    return ((strong - weak) > margin).astype(np.int8)


@dataclass(frozen=True, slots=True)
class PairOutcomes:
    """The rows that have outcomes for both models, with the scores and labels of the pair."""

    rows: tuple[OutcomeRow, ...]
    weak_scores: FloatArray
    strong_scores: FloatArray
    labels: npt.NDArray[np.int8]
    # Rows lacking either model's outcome: left out, and reported.
    skipped: int


def pair_outcomes(
    rows: Sequence[OutcomeRow], weak: str, strong: str, margin: float = 0.0
) -> PairOutcomes:
    """The outcomes of one weak/strong pair over ``rows``."""
    kept = tuple(row for row in rows if weak in row.outcomes and strong in row.outcomes)
    weak_scores = np.array([row.outcomes[weak].score for row in kept], dtype=np.float64)
    strong_scores = np.array([row.outcomes[strong].score for row in kept], dtype=np.float64)
    return PairOutcomes(
        rows=kept,
        weak_scores=weak_scores,
        strong_scores=strong_scores,
        labels=falls_short(weak_scores, strong_scores, margin),
        skipped=len(rows) - len(kept),
    )


@dataclass(frozen=True, slots=True)
class TrainingTargets:
    """Per-prompt weights of "falls short" (positive) and "does not" (negative)."""

    rows: tuple[OutcomeRow, ...]
    positive: FloatArray
    negative: FloatArray
    # Whether each row has outcomes for the target pair itself (cross-validation holds out
    # only those; the others are auxiliary and always trained on).
    has_target_pair: npt.NDArray[np.bool_]
    # (source group, reference model, weaker models) for the training summary.
    pairs: tuple[tuple[str, str, tuple[str, ...]], ...]


def training_targets(
    rows: Sequence[OutcomeRow],
    weak: str,
    strong: str,
    *,
    margin: float = 0.0,
    target_weight: float = 1.0,
    auxiliary_weight: float = 1.0,
    auxiliary_min_quality: float = 0.6,
) -> TrainingTargets:
    """Weights for every row that has at least one usable pair (see the module docstring)."""
    groups: dict[str, list[OutcomeRow]] = defaultdict(list)
    for row in rows:
        groups[source_group(row)].append(row)
    kept: list[OutcomeRow] = []
    positive: list[float] = []
    negative: list[float] = []
    pairs = []
    for group, group_rows in groups.items():
        means = _mean_scores(group_rows)
        reference = strong if strong in means else max(means, key=lambda m: (means[m], m))
        floor = auxiliary_min_quality * means[reference]
        weaker = tuple(
            sorted(
                model
                for model in means
                if model != reference and floor <= means[model] < means[reference]
            )
        )
        if weak in means and weak != reference and weak not in weaker:
            weaker = (*weaker, weak)  # the target pair is used even where weak wins on average
        pairs.append((group, reference, weaker))
        for row in group_rows:
            if reference not in row.outcomes:
                continue
            strong_score = row.outcomes[reference].score
            pos = neg = 0.0
            for model in weaker:
                if model not in row.outcomes:
                    continue
                is_target = model == weak and reference == strong
                weight = target_weight if is_target else auxiliary_weight
                if strong_score - row.outcomes[model].score > margin:
                    pos += weight
                else:
                    neg += weight
            if pos + neg > 0.0:
                kept.append(row)
                positive.append(pos)
                negative.append(neg)
    has_pair = np.array(
        [weak in row.outcomes and strong in row.outcomes for row in kept], dtype=np.bool_
    )
    return TrainingTargets(
        rows=tuple(kept),
        positive=np.array(positive, dtype=np.float64),
        negative=np.array(negative, dtype=np.float64),
        has_target_pair=has_pair,
        pairs=tuple(pairs),
    )


def source_group(row: OutcomeRow) -> str:
    """The data set a row comes from: its source up to the first "/" (task families share it)."""
    return row.source.split("/", 1)[0]


def _mean_scores(rows: Sequence[OutcomeRow]) -> dict[str, float]:
    totals: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for model, outcome in row.outcomes.items():
            totals[model].append(outcome.score)
    return {model: float(np.mean(scores)) for model, scores in totals.items()}
