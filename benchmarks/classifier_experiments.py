"""The third series of classifier experiments (docs/CLASSIFIER.md), on training data only.

Run: ``python -m benchmarks.classifier_experiments [--only NAME ...]``. Reads the train splits
of ../shared/data (RouterBench 0-shot and DC-Router), never their test rows: the RouterBench
test split is read for its *prompts* only, to leave out the train rows that repeat one (as
``llm-router train --exclude`` does). Prints one line per recipe and writes
``benchmarks/results/classifier_experiments.json``.

Every recipe is scored by the same three protocols, all on training data:

* CV: 5-fold stratified cross-validation on RouterBench train, Mixtral -> GPT-4 (APGR,
  CPT(50%), cost at 95% quality with the recorded costs, and APGR within each task);
* LOTO: train on two RouterBench tasks, APGR within the third;
* transfer: train on all of RouterBench train, APGR on DC-Router *train* for qwen2.5-7b ->
  nemotron-51b (a pair and task families RouterBench does not have), overall and within each
  prompt family (found by prompt patterns, ``dc_family``).

and compared with the shipped recipe by a paired bootstrap of the APGR difference (same rows
resampled for both), which is what tells a gain from fold noise.

Needs the training extras (scikit-learn); ``wordfreq`` (optional, not a project dependency)
for the word-rarity features.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from classifier.features import EMBEDDING_DIM, NGRAM_DIM, _final_block, embed, prompt_text
from training.dataset import question_key, read_outcomes
from training.metrics import (
    apgr,
    call_performance_threshold,
    operating_point_at_quality,
    quantile_curve,
)

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "classifier_experiments.json"
WEAK, STRONG = "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"
DC_WEAK, DC_STRONG = "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"
DC_FAMILIES = ("math", "shortqa", "reading", "logic")
BOOTSTRAP = 300

Array = np.ndarray[Any, Any]
# A recipe fits on (embeddings, outcome matrix, model names) and scores other embeddings.
Recipe = Callable[[sp.csr_matrix, Array, list[str], sp.csr_matrix], Array]


@dataclass
class Dataset:
    texts: list[str]
    models: list[str]
    outcomes: Array  # prompts x models, NaN where a model has no outcome
    embeddings: sp.csr_matrix
    family: Array  # task (RouterBench) or prompt family (DC-Router)
    costs: dict[str, Array]

    def pair(self, weak: str, strong: str) -> tuple[Array, Array, Array]:
        w = self.outcomes[:, self.models.index(weak)]
        s = self.outcomes[:, self.models.index(strong)]
        return ~(np.isnan(w) | np.isnan(s)), w, s


def dc_family(text: str) -> str:
    """DC-Router has no task field; its families by prompt pattern (rough, for analysis)."""
    lowered = text.lower()
    if "boxed" in text or (
        re.search(r"how (many|much)", lowered) and len(text) < 1500 and "passage" not in lowered
    ):
        return "math"
    if re.search(r'\bdef \w+\(|"""', text):
        return "code"
    if "Clue" in text or "houses in a row" in text:
        return "logic"
    return "reading" if len(text) > 700 else "shortqa"


def load(path: pathlib.Path, exclude: set[str] | None = None, families: bool = False) -> Dataset:
    rows = [row for row in read_outcomes(path).rows if row.split != "test"]
    if exclude:
        rows = [row for row in rows if question_key(row.messages) not in exclude]
    models = sorted({model for row in rows for model in row.outcomes})
    outcomes = np.full((len(rows), len(models)), np.nan)
    for i, row in enumerate(rows):
        for j, model in enumerate(models):
            if model in row.outcomes:
                outcomes[i, j] = row.outcomes[model].score
    texts = [prompt_text(row.messages) for row in rows]
    costs = {
        model: np.array(
            [
                np.nan
                if model not in row.outcomes or row.outcomes[model].cost_usd is None
                else row.outcomes[model].cost_usd
                for row in rows
            ]
        )
        for model in models
    }
    return Dataset(
        texts=texts,
        models=models,
        outcomes=outcomes,
        embeddings=sp.csr_matrix(np.vstack([embed(text) for text in texts])),
        family=np.array(
            [
                dc_family(text) if families else (row.task or "")
                for row, text in zip(rows, texts, strict=True)
            ]
        ),
        costs=costs,
    )


# --- labels ---------------------------------------------------------------------------------


def weaker_models(outcomes: Array, models: list[str], floor: float = 0.6) -> list[int]:
    """The auxiliary weak models of training/labels.py: below GPT-4's mean, above floor x it."""
    means = np.nanmean(outcomes, axis=0)
    top = models.index(STRONG)
    chosen = [
        j for j in range(len(models)) if j != top and floor * means[top] <= means[j] < means[top]
    ]
    return sorted({*chosen, models.index(WEAK)})


def pair_counts(outcomes: Array, models: list[str], floor: float = 0.6) -> tuple[Array, ...]:
    """Per prompt: how many weaker models fall short of GPT-4, do not, and beat it."""
    strong = outcomes[:, [models.index(STRONG)]]
    weak = outcomes[:, weaker_models(outcomes, models, floor)]
    valid = ~np.isnan(weak) & ~np.isnan(strong)
    falls_short = np.where(valid, (strong - weak) > 0, False).sum(1).astype(float)
    not_short = np.where(valid, (strong - weak) <= 0, False).sum(1).astype(float)
    beats = np.where(valid, (weak - strong) > 0, False).sum(1).astype(float)
    return falls_short, not_short, beats


def rasch(outcomes: Array, iterations: int = 300, prior: float = 1.0) -> tuple[Array, Array]:
    """MAP fit of P(model m right on prompt i) = sigmoid(ability_m - difficulty_i)."""
    valid = ~np.isnan(outcomes)
    y = np.nan_to_num(outcomes)
    ability = np.zeros(outcomes.shape[1])
    difficulty = np.zeros(outcomes.shape[0])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(ability[None, :] - difficulty[:, None])))
        residual = np.where(valid, y - p, 0.0)
        curvature = np.where(valid, p * (1 - p), 0.0)
        step = (-residual.sum(1) - prior * difficulty) / (curvature.sum(1) + prior)
        difficulty = np.clip(difficulty + 0.5 * step, -8, 8)
        ability = np.clip(ability + 0.5 * residual.sum(0) / (curvature.sum(0) + 1e-9), -8, 8)
        ability -= ability.mean()
    return ability, difficulty


# --- models ---------------------------------------------------------------------------------


def _column_scale(ngram_weight: float, dim: int) -> sp.dia_matrix:
    scale = np.ones(dim)
    scale[:NGRAM_DIM] = ngram_weight
    return sp.diags(scale)


def weighted_logistic(
    x: sp.csr_matrix, positive: Array, negative: Array, c: float = 3.0, ngram_weight: float = 0.1
) -> Callable[[sp.csr_matrix], Array]:
    """training/model.py's fit: each row once as 1 (weight positive), once as 0 (negative)."""
    scaled = (x @ _column_scale(ngram_weight, x.shape[1])).tocsr()
    stacked = sp.vstack([scaled, scaled], format="csr")
    labels = np.r_[np.ones(x.shape[0]), np.zeros(x.shape[0])]
    weights = np.r_[positive, negative]
    keep = weights > 0
    model = LogisticRegression(C=c, max_iter=5000)
    model.fit(stacked[keep], labels[keep], sample_weight=weights[keep])
    return lambda xt: model.decision_function(xt @ _column_scale(ngram_weight, xt.shape[1]))


def _sigmoid(z: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-z))


def shipped(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
    positive, negative, _ = pair_counts(y, models)
    return weighted_logistic(x, positive, negative)(xt)


def gain_two_models(lam: float) -> Recipe:
    """Expected gain: P(weaker falls short) - lam * P(weaker beats GPT-4), two regressions."""

    def recipe(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
        positive, negative, beats = pair_counts(y, models)
        total = positive + negative
        short = weighted_logistic(x, positive, negative)(xt)
        wins = weighted_logistic(x, beats, total - beats)(xt)
        return _sigmoid(short) - lam * _sigmoid(wins)

    return recipe


def gain_one_model(lam: float) -> Recipe:
    """One regression, where a weaker model beating GPT-4 weighs 1 + lam as a negative."""

    def recipe(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
        positive, negative, beats = pair_counts(y, models)
        return weighted_logistic(x, positive, negative + lam * beats)(xt)

    return recipe


def aux_variant(floor: float = 0.6, target_weight: float = 1.0) -> Recipe:
    def recipe(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
        positive, negative, _ = pair_counts(y, models, floor)
        s, w = y[:, models.index(STRONG)], y[:, models.index(WEAK)]
        valid = ~np.isnan(s) & ~np.isnan(w)
        positive = positive + (target_weight - 1) * np.where(valid, (s - w) > 0, 0)
        negative = negative + (target_weight - 1) * np.where(valid, (s - w) <= 0, 0)
        return weighted_logistic(x, positive, negative)(xt)

    return recipe


def irt_explanatory(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
    """P(m right | x) = sigmoid(ability_m + x.beta), all 11 models, one shared beta;
    score = P(GPT-4 right) - P(Mixtral right)."""
    scaled = (x @ _column_scale(0.1, x.shape[1])).tocsr()
    blocks, labels, weights = [], [], []
    for k in range(y.shape[1]):
        valid = ~np.isnan(y[:, k])
        n = int(valid.sum())
        one_hot = sp.csr_matrix((np.ones(n), (np.arange(n), np.full(n, k))), shape=(n, y.shape[1]))
        block = sp.hstack([scaled[valid], one_hot], format="csr")
        blocks += [block, block]
        labels += [np.ones(n), np.zeros(n)]
        weights += [y[valid, k], 1 - y[valid, k]]
    design = sp.vstack(blocks, format="csr")
    target, weight = np.concatenate(labels), np.concatenate(weights)
    keep = weight > 0
    model = LogisticRegression(C=3.0, max_iter=5000)
    model.fit(design[keep], target[keep], sample_weight=weight[keep])
    beta = model.coef_[0, : x.shape[1]]
    ability = model.coef_[0, x.shape[1] :] + model.intercept_[0]
    ease = (xt @ _column_scale(0.1, xt.shape[1])) @ beta
    return _sigmoid(ease + ability[models.index(STRONG)]) - _sigmoid(
        ease + ability[models.index(WEAK)]
    )


def irt_soft_labels(mix: float) -> Recipe:
    """Labels: the Rasch fit's P(Mixtral wrong and GPT-4 right), mixed with the pair counts."""

    def recipe(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
        ability, difficulty = rasch(y)
        q = _sigmoid(ability[models.index(STRONG)] - difficulty) * (
            1 - _sigmoid(ability[models.index(WEAK)] - difficulty)
        )
        positive, negative, _ = pair_counts(y, models)
        total = positive + negative
        soft = mix * q * total + (1 - mix) * positive
        return weighted_logistic(x, soft, total - soft)(xt)

    return recipe


def knn(k: int = 100, temperature: float = 5.0) -> Recipe:
    """Similarity-weighted mean of the neighbours' share of falling-short pairs (RouteLLM's
    SW ranking, on the cosine of the n-gram block)."""

    def recipe(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
        positive, negative, _ = pair_counts(y, models)
        share = positive / np.maximum(positive + negative, 1)
        similarity = (xt[:, :NGRAM_DIM] @ x[:, :NGRAM_DIM].T).toarray()
        out = np.zeros(xt.shape[0])
        for i, row in enumerate(similarity):
            top = np.argpartition(-row, k)[:k]
            weights = np.exp(temperature * (row[top] - row[top].max()))
            out[i] = np.sum(weights * share[top]) / np.sum(weights)
        return out

    return recipe


def gbdt(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
    """Gradient-boosted trees (depth 2, 100 rounds) on the 36 structure features."""
    positive, negative, _ = pair_counts(y, models)
    features = x[:, NGRAM_DIM:EMBEDDING_DIM].toarray()
    stacked = np.vstack([features, features])
    labels = np.r_[np.ones(len(features)), np.zeros(len(features))]
    weights = np.r_[positive, negative]
    keep = weights > 0
    model = HistGradientBoostingClassifier(
        learning_rate=0.05, max_iter=100, max_depth=2, min_samples_leaf=40, random_state=0
    )
    model.fit(stacked[keep], labels[keep], sample_weight=weights[keep])
    return np.asarray(model.decision_function(xt[:, NGRAM_DIM:EMBEDDING_DIM].toarray()))


class FamilyEffects:
    """Per-task-family calibration: the regression gets one indicator per training task
    (scaled up, so lightly penalised), which absorbs the tasks' base rates and leaves the
    other weights to within-task differences. At scoring time the task is not known: a prompt
    takes the intercept of the training task whose mean structure features are nearest."""

    needs_family = True

    def __init__(self, ngram_weight: float = 0.1, scale: float = 10.0) -> None:
        self.ngram_weight, self.scale = ngram_weight, scale

    def __call__(
        self, x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix, family: Array
    ) -> Array:
        positive, negative, _ = pair_counts(y, models)
        names = sorted(set(family))
        codes = np.array([names.index(f) for f in family])
        indicators = sp.csr_matrix(
            (np.full(len(codes), self.scale), (np.arange(len(codes)), codes)),
            shape=(len(codes), len(names)),
        )
        design = sp.hstack([x, indicators], format="csr")
        scale = np.r_[
            np.where(np.arange(x.shape[1]) < NGRAM_DIM, self.ngram_weight, 1.0), np.ones(len(names))
        ]
        fit = weighted_logistic(design @ sp.diags(scale), positive, negative, ngram_weight=1.0)
        structure = x[:, NGRAM_DIM:EMBEDDING_DIM].toarray()
        centroids = np.vstack([structure[codes == k].mean(0) for k in range(len(names))])
        test_structure = xt[:, NGRAM_DIM:EMBEDDING_DIM].toarray()
        nearest = np.argmin(
            ((test_structure[:, None, :] - centroids[None, :, :]) ** 2).sum(-1), axis=1
        )
        test_indicators = sp.csr_matrix(
            (np.full(xt.shape[0], self.scale), (np.arange(xt.shape[0]), nearest)),
            shape=(xt.shape[0], len(names)),
        )
        return fit(sp.hstack([xt, test_indicators], format="csr") @ sp.diags(scale))


def blend(*parts: tuple[Recipe, float, bool]) -> Recipe:
    """Weighted sum of recipes' scores; a part marked True is a share, taken as its logit."""

    def recipe(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
        total = np.zeros(xt.shape[0])
        for part, weight, is_share in parts:
            score = part(x, y, models, xt)
            if is_share:
                score = np.clip(score, 0.01, 0.99)
                score = np.log(score / (1 - score))
            total += weight * score
        return total

    return recipe


# --- extra features of the ask (appended to the embedding for the "ask" recipes) -------------

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_NEGATION = re.compile(r"\b(not|except|never|least|false|incorrect|cannot|no)\b", re.IGNORECASE)


def ask_features(text: str, rarity: bool) -> Array:
    """Ten counts of the final block; with ``rarity`` six word-rarity figures (wordfreq)."""
    block = _final_block(text)
    words = _WORD.findall(block)
    n, length = max(len(words), 1), max(len(block), 1)
    values = [
        np.log1p(len(words)) / 6,
        sum(ch.isdigit() for ch in block) / length,
        np.log1p(len(re.findall(r"\d+(?:\.\d+)?", block))) / 4,
        sum(ch in "+-*/=^<>%" for ch in block) / length,
        np.mean([len(w) for w in words]) / 10 if words else 0.0,
        sum(len(w) >= 9 for w in words) / n,
        len({w.lower() for w in words}) / n,
        block.count(",") / n,
        np.log1p(len(_NEGATION.findall(block))) / 2,
        float("_" in block),
    ]
    if rarity:
        import wordfreq

        zipf = np.array([wordfreq.zipf_frequency(w.lower(), "en") for w in words] or [7.0])
        values += [
            (7 - zipf.mean()) / 4,
            (7 - zipf.min()) / 7,
            float(np.mean(zipf < 3.0)),
            float(np.mean(zipf < 2.0)),
            float(np.mean(zipf == 0)),
            (7 - np.percentile(zipf, 10)) / 7,
        ]
    return np.asarray(values, dtype=np.float64)


# --- protocols ------------------------------------------------------------------------------


def metrics(
    scores: Array, weak: Array, strong: Array, costs: tuple[Array, Array] | None = None
) -> dict[str, Any]:
    curve = quantile_curve(scores, weak, strong)
    weak_cost, strong_cost = costs if costs else (np.full(len(weak), 1.2), np.full(len(weak), 5.0))
    point = operating_point_at_quality(scores, weak, strong, weak_cost, strong_cost)
    return {
        "apgr": apgr(curve),
        "cpt50": call_performance_threshold(curve, 0.5),
        "cost95": None if point is None else point.cost_ratio,
    }


def _fit_score(recipe: Any, data: Dataset, train: Array, xt: sp.csr_matrix) -> Array:
    args = (data.embeddings[train], data.outcomes[train], data.models, xt)
    if getattr(recipe, "needs_family", False):
        return np.asarray(recipe(*args, family=data.family[train]))
    return np.asarray(recipe(*args))


def cross_validate(recipe: Any, rb: Dataset, seed: int = 0) -> tuple[dict[str, Any], Array]:
    ok, w, s = rb.pair(WEAK, STRONG)
    index = np.flatnonzero(ok)
    labels = (s[index] - w[index] > 0).astype(int)
    scores = np.zeros(len(index))
    for _, held in StratifiedKFold(5, shuffle=True, random_state=seed).split(index, labels):
        train = np.ones(len(rb.texts), dtype=bool)
        train[index[held]] = False
        scores[held] = _fit_score(recipe, rb, train, rb.embeddings[index[held]])
    costs = (rb.costs[WEAK][index], rb.costs[STRONG][index])
    result = metrics(scores, w[index], s[index], costs)
    family = rb.family[index]
    result["within_task"] = {
        task: metrics(scores[family == task], w[index][family == task], s[index][family == task])[
            "apgr"
        ]
        for task in sorted(set(family))
    }
    return result, scores


def leave_one_task_out(recipe: Any, rb: Dataset) -> dict[str, float]:
    ok, w, s = rb.pair(WEAK, STRONG)
    result = {}
    for task in sorted(set(rb.family)):
        train, held = rb.family != task, (rb.family == task) & ok
        scores = _fit_score(recipe, rb, train, rb.embeddings[held])
        result[task] = metrics(scores, w[held], s[held])["apgr"]
    return result


def transfer(recipe: Any, rb: Dataset, dc: Dataset) -> tuple[dict[str, Any], Array]:
    ok, w, s = dc.pair(DC_WEAK, DC_STRONG)
    everything = np.ones(len(rb.texts), dtype=bool)
    scores = _fit_score(recipe, rb, everything, dc.embeddings[ok])
    result = metrics(scores, w[ok], s[ok])
    family = dc.family[ok]
    result["within_family"] = {
        name: metrics(scores[family == name], w[ok][family == name], s[ok][family == name])["apgr"]
        for name in DC_FAMILIES
    }
    return result, scores


def paired_bootstrap(a: Array, b: Array, weak: Array, strong: Array) -> list[float]:
    """Mean and 95% interval of APGR(a) - APGR(b) over resamples of the same rows."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(weak), len(weak))
        diffs.append(
            apgr(quantile_curve(a[i], weak[i], strong[i]))
            - apgr(quantile_curve(b[i], weak[i], strong[i]))
        )
    return [float(np.mean(diffs)), *np.percentile(diffs, [2.5, 97.5]).tolist()]


def grouped_paired_bootstrap(
    a: dict[str, tuple[Array, Array, Array]], b: dict[str, tuple[Array, Array, Array]]
) -> list[float]:
    """Mean and 95% interval of the difference of the *mean over groups* of APGR (LOTO's
    three tasks, or DC-Router's four families), rows resampled within each group, the same
    rows for both recipes."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(BOOTSTRAP):
        total = 0.0
        for name, (scores_a, weak, strong) in a.items():
            scores_b = b[name][0]
            i = rng.integers(0, len(weak), len(weak))
            total += apgr(quantile_curve(scores_a[i], weak[i], strong[i])) - apgr(
                quantile_curve(scores_b[i], weak[i], strong[i])
            )
        diffs.append(total / len(a))
    return [float(np.mean(diffs)), *np.percentile(diffs, [2.5, 97.5]).tolist()]


def bootstrap_interval(scores: Array, weak: Array, strong: Array) -> list[float]:
    rng = np.random.default_rng(0)
    values = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(weak), len(weak))
        values.append(apgr(quantile_curve(scores[i], weak[i], strong[i])))
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def reference_figures(
    rb: Dataset, dc: Dataset, shipped_scores: tuple[Array, Array]
) -> dict[str, Any]:
    """What the recipes are measured against: the noise of the shipped recipe's figures,
    two oracles on RouterBench train, and prompt length alone on DC-Router train."""
    ok, w, s = rb.pair(WEAK, STRONG)
    w, s, y = w[ok], s[ok], rb.outcomes[ok]
    others = [j for j, m in enumerate(rb.models) if m not in (WEAK, STRONG)]
    share_wrong = np.nanmean(1 - y[:, others], axis=1)
    ok_dc, w_dc, s_dc = dc.pair(DC_WEAK, DC_STRONG)
    w_dc, s_dc, family = w_dc[ok_dc], s_dc[ok_dc], dc.family[ok_dc]
    length = np.array([len(t) for t, keep in zip(dc.texts, ok_dc, strict=True) if keep], float)
    return {
        "shipped_cv_apgr_interval": bootstrap_interval(shipped_scores[0], w, s),
        "shipped_transfer_apgr_interval": bootstrap_interval(shipped_scores[1], w_dc, s_dc),
        "oracle_share_of_other_models_wrong": apgr(quantile_curve(share_wrong, w, s)),
        # Ties broken by position, so that a threshold can split them.
        "oracle_own_outcome": apgr(quantile_curve(s - w + 1e-9 * np.arange(len(w)), w, s)),
        "dc_train_prompt_length": metrics(length, w_dc, s_dc),
        "dc_train_prompt_length_within_family": {
            name: metrics(length[family == name], w_dc[family == name], s_dc[family == name])[
                "apgr"
            ]
            for name in DC_FAMILIES
        },
    }


def with_extra(data: Dataset, rarity: bool) -> Dataset:
    extra = np.vstack([ask_features(text, rarity) for text in data.texts])
    return Dataset(
        texts=data.texts,
        models=data.models,
        outcomes=data.outcomes,
        embeddings=sp.hstack([data.embeddings, sp.csr_matrix(extra)], format="csr"),
        family=data.family,
        costs=data.costs,
    )


RECIPES: dict[str, Recipe] = {
    "shipped": shipped,
    "gain 2 models lam 0.5": gain_two_models(0.5),
    "gain 2 models lam 1": gain_two_models(1.0),
    "gain 1 model lam 1": gain_one_model(1.0),
    "aux floor 0.8": aux_variant(floor=0.8),
    "aux floor 0": aux_variant(floor=0.0),
    "target weight 3": aux_variant(target_weight=3.0),
    "irt explanatory": irt_explanatory,
    "irt soft labels": irt_soft_labels(1.0),
    "irt soft labels mix 0.5": irt_soft_labels(0.5),
    "knn k100": knn(),
    "lr + knn 0.5": blend((shipped, 1.0, False), (knn(), 0.5, True)),
    "gbdt structure": gbdt,
    "lr + gbdt": blend((shipped, 0.5, False), (gbdt, 0.5, False)),
}
FAMILY_RECIPES = {
    "task fixed effects": FamilyEffects(),
    "task fixed effects, n-grams 0.3": FamilyEffects(ngram_weight=0.3),
}
EXTRA_FEATURES = {"shipped + ask features": False, "shipped + ask + rarity": True}


def training_sets() -> tuple[Dataset, Dataset]:
    """RouterBench train (less the rows whose prompt is also in its test split: only the test
    split's prompts are read) and DC-Router train with its prompt families."""
    test_prompts = {
        question_key(row.messages)
        for row in read_outcomes(DATA / "routerbench-0shot" / "test.jsonl").rows
    }
    rb = load(DATA / "routerbench-0shot" / "train.jsonl", exclude=test_prompts)
    return rb, load(DATA / "dcrouter" / "train.jsonl", families=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="recipes to run (default all)")
    args = parser.parse_args()
    rb, dc = training_sets()
    ok_rb, w_rb, s_rb = rb.pair(WEAK, STRONG)
    ok_dc, w_dc, s_dc = dc.pair(DC_WEAK, DC_STRONG)
    names = [*RECIPES, *FAMILY_RECIPES, *EXTRA_FEATURES]
    # The shipped recipe always runs first: the others are compared with it.
    names = [n for n in names if args.only is None or n in args.only or n == "shipped"]
    # A partial run (--only) updates the entries it ran and keeps the others.
    results: dict[str, Any] = (
        json.loads(RESULTS.read_text()) if args.only is not None and RESULTS.exists() else {}
    )
    reference: tuple[Array, Array] | None = None
    for name in names:
        started = time.perf_counter()
        if name in EXTRA_FEATURES:
            rarity = EXTRA_FEATURES[name]
            data_rb, data_dc, recipe = with_extra(rb, rarity), with_extra(dc, rarity), shipped
        else:
            data_rb, data_dc = rb, dc
            recipe = FAMILY_RECIPES.get(name) or RECIPES[name]
        cv, cv_scores = cross_validate(recipe, data_rb)
        loto = leave_one_task_out(recipe, data_rb)
        tr, tr_scores = transfer(recipe, data_rb, data_dc)
        entry: dict[str, Any] = {"cv": cv, "loto": loto, "transfer": tr}
        if name == "shipped":
            reference = (cv_scores, tr_scores)
            entry["cv_seeds"] = [cv["apgr"]] + [
                cross_validate(recipe, data_rb, seed)[0]["apgr"] for seed in (1, 2)
            ]
            results["reference"] = reference_figures(rb, dc, reference)
            print(json.dumps(results["reference"], indent=1))
        elif reference is not None:
            entry["vs_shipped"] = {
                "cv": paired_bootstrap(cv_scores, reference[0], w_rb[ok_rb], s_rb[ok_rb]),
                "transfer": paired_bootstrap(tr_scores, reference[1], w_dc[ok_dc], s_dc[ok_dc]),
            }
        results[name] = entry
        print(summary_line(name, entry, started), flush=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


def summary_line(name: str, entry: dict[str, Any], started: float) -> str:
    """One recipe's figures (`entry` as stored in the results) on one line, with each paired
    difference to the shipped recipe that `entry["vs_shipped"]` holds."""
    cv, loto, tr = entry["cv"], entry["loto"], entry["transfer"]
    within = np.mean(list(tr["within_family"].values()))
    labels = {"cv": "CV", "transfer": "transfer", "loto_mean": "LOTO"}
    diffs = "".join(
        f" {labels.get(key, key.replace('_mean', '').replace('_', '-'))}"
        f" {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
        for key, d in entry.get("vs_shipped", {}).items()
    )
    return (
        f"{name:38s} CV {cv['apgr']:.3f} cpt50 {cv['cpt50']:.3f} cost95 {cv['cost95']:.3f}"
        f" | LOTO {np.mean(list(loto.values())):.3f} | transfer {tr['apgr']:.3f}"
        f" within-family {within:.3f} | mean(CV, transfer) {(cv['apgr'] + tr['apgr']) / 2:.3f}"
        + (f" | vs shipped:{diffs}" if diffs else "")
        + f"  ({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
