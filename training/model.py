"""Fitting the difficulty model: weighted logistic regression, cross-validated and calibrated.

The model is a logistic regression on the prompt embedding (``classifier.features``), fitted
to the positive/negative weights of ``labels.training_targets``. Because those weights mix the
target pair with auxiliary pairs, the raw probability estimates "some weaker model falls short",
not "this weak model falls short of this strong one". Platt scaling fixes that: a 1-D logistic
fit of the target pair's labels on out-of-fold decision values.

The n-gram blocks of the embedding are multiplied by ``ngram_weight`` (< 1) before fitting,
which under one L2 penalty regularises them harder than the structure features: n-grams
memorise the vocabulary of the training benchmarks, structure carries over to task families
never seen (CLASSIFIER.md has the measurements). The weight is folded back into the
coefficients, so the exported model reads the embedding as it is. Logistic regression followed
by Platt scaling is again a logistic regression (scale the weights and shift the intercept),
so the calibrated model is one ``LogisticRegression`` that exports to ONNX as it is.

scikit-learn is imported here; this module is for training only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from classifier.features import NGRAM_DIM
from training.errors import NoDataError
from training.progress import progress

__all__ = [
    "ModelConfig",
    "TrainedModel",
    "calibrated",
    "fit_logistic",
    "out_of_fold_decisions",
    "platt_scaling",
    "train_model",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Hyper-parameters; the defaults are the ones chosen by cross-validation (CLASSIFIER.md)."""

    # Inverse L2 strength of the logistic regression.
    c: float = 3.0
    # Scale of the n-gram blocks relative to the structure features while fitting.
    ngram_weight: float = 0.1
    folds: int = 5
    seed: int = 0
    max_iter: int = 5_000


@dataclass(frozen=True, slots=True)
class TrainedModel:
    model: LogisticRegression
    # Calibrated out-of-fold probabilities of the target-pair rows, in their order.
    out_of_fold: FloatArray
    platt: tuple[float, float]


def fit_logistic(
    features: sp.csr_matrix, positive: FloatArray, negative: FloatArray, config: ModelConfig
) -> LogisticRegression:
    """Weighted logistic regression: each row appears once as 1 (weight ``positive``) and
    once as 0 (weight ``negative``), the likelihood of the summed pair outcomes."""
    stacked = sp.vstack([features, features], format="csr")
    labels = np.concatenate([np.ones(features.shape[0]), np.zeros(features.shape[0])])
    weights = np.concatenate([positive, negative])
    keep = weights > 0
    if len(np.unique(labels[keep])) < 2:
        raise NoDataError(
            "the training data has only one class (the weak model always falls short, or "
            "never does): nothing to learn"
        )
    model = LogisticRegression(C=config.c, max_iter=config.max_iter)
    model.fit(stacked[keep], labels[keep], sample_weight=weights[keep])
    return model


def out_of_fold_decisions(
    features: sp.csr_matrix,
    positive: FloatArray,
    negative: FloatArray,
    *,
    target_rows: npt.NDArray[np.intp],
    target_labels: npt.NDArray[np.int8],
    config: ModelConfig,
) -> FloatArray:
    """Decision values for the target-pair rows, each from a model that never saw the row.

    Only target-pair rows are held out; auxiliary rows are always in the training folds.
    """
    decisions = np.zeros(len(target_rows), dtype=np.float64)
    counts = np.bincount(target_labels, minlength=2)
    folds = min(config.folds, int(counts.min()))
    if folds < 2:
        raise NoDataError(
            f"too few rows to cross-validate: {counts[1]} where the weak model falls short and "
            f"{counts[0]} where it does not; at least 2 of each are needed"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    everything = np.ones(features.shape[0], dtype=np.bool_)
    splits = splitter.split(target_rows, target_labels)
    for _, held_index in progress(splits, "cross-validating", unit="fold", total=folds):
        train_mask = everything.copy()
        train_mask[target_rows[held_index]] = False
        model = fit_logistic(
            features[train_mask], positive[train_mask], negative[train_mask], config
        )
        decisions[held_index] = model.decision_function(features[target_rows[held_index]])
    return decisions


def platt_scaling(decisions: FloatArray, labels: npt.NDArray[np.int8]) -> tuple[float, float]:
    """(a, b) with P(label = 1) = sigmoid(a * decision + b), fitted by maximum likelihood."""
    fit = LogisticRegression(C=1e6, max_iter=1_000)
    fit.fit(decisions.reshape(-1, 1), labels)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def calibrated(model: LogisticRegression, platt: tuple[float, float]) -> LogisticRegression:
    """The logistic regression whose probabilities are the Platt-scaled ones of ``model``."""
    scale, shift = platt
    result = copy.deepcopy(model)
    result.coef_ = model.coef_ * scale
    result.intercept_ = model.intercept_ * scale + shift
    return result


def train_model(
    features: sp.csr_matrix,
    positive: FloatArray,
    negative: FloatArray,
    *,
    target_rows: npt.NDArray[np.intp],
    target_labels: npt.NDArray[np.int8],
    config: ModelConfig,
) -> TrainedModel:
    """Cross-validate, calibrate on the out-of-fold decisions, refit on everything."""
    column_weights = np.ones(features.shape[1])
    column_weights[:NGRAM_DIM] = config.ngram_weight
    features = (features @ sp.diags(column_weights)).tocsr()
    decisions = out_of_fold_decisions(
        features,
        positive,
        negative,
        target_rows=target_rows,
        target_labels=target_labels,
        config=config,
    )
    platt = platt_scaling(decisions, target_labels)
    final = calibrated(fit_logistic(features, positive, negative, config), platt)
    final.coef_ = final.coef_ * column_weights  # the model now reads unscaled embeddings
    out_of_fold = 1.0 / (1.0 + np.exp(-(platt[0] * decisions + platt[1])))
    return TrainedModel(model=final, out_of_fold=out_of_fold, platt=platt)
