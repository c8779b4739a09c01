"""A sixth series of classifier experiments: RouteLLM's matrix factorization (MF) router.

Run: ``python -m benchmarks.mf_router_experiments [--only NAME ...]`` (about 21 minutes on one
core; set OMP_NUM_THREADS=1 / OPENBLAS_NUM_THREADS=1 and pin it with ``taskset -c 1``). Only
training splits are scored: RouterBench 0-shot train and DC-Router train, loaded by the third
series' ``training_sets`` (the RouterBench test split is read for its *prompts* only, to leave
out the train rows that repeat one). Prints one line per variant and writes
``benchmarks/results/mf_router_experiments.json``.

The MF router (Ong et al. 2024, "RouteLLM: Learning to Route LLMs with Preference Data") scores
a model m on a prompt q as

    s(m, q) = w2 . (v_m / |v_m|  *  (W1 e_q + b))

with e_q a prompt embedding, W1 a projection to k dimensions, v_m a learned model embedding
(unit-normalised, as RouteLLM's code does) and w2 a k-vector, and is fitted as a Bradley-Terry
model on pairwise comparisons: P(a beats b on q) = sigmoid(s(a, q) - s(b, q)). The router's
score for a prompt is the logit of P(GPT-4 beats Mixtral). Here the comparisons come from the
0/1 outcomes of RouterBench's 11 models: for each prompt, every pair of models of which exactly
one is right is one comparison (ties and missing outcomes dropped); a variant keeps only the
pairs that involve GPT-4 or Mixtral. Fitted in numpy with L-BFGS (scipy) on the full batch, the
gradient written out; the objective is the mean logistic loss over comparisons plus
``l2 / 2 * (|W1|^2 + |w2|^2)`` (b unpenalised, like a logistic regression's intercept; the
model embeddings are scale-free after normalisation). RouteLLM itself trains with Adam, weight
decay 1e-5, Gaussian noise on the embeddings and no b; the full-batch L2 fit here is the
deterministic counterpart. Random initialisation with a fixed seed; the fit is non-convex, so
one variant is repeated with another seed.

Note that for one fixed pair the MF score is *linear* in e_q: s(GPT-4, q) - s(Mixtral, q) =
(w2 * (v_G - v_M)) . (W1 e_q + b). It is the shipped logistic regression's function class;
what differs is the training signal (all 55 model pairs, tied together by a rank-k
projection shared by every model) and the regularisation.

Prompt embeddings e_q (both are functions of the project's ``classifier.features.embed``):

* ``svd``: the hashed n-gram block scaled by the shipped factor 0.1, reduced to 256 dimensions
  by a TruncatedSVD fitted on the training rows of each fit only, then the 36 structure
  features appended unscaled (the shipped regression sees the same columns at the same
  scales, before the reduction);
* ``structure``: the 36 structure features only.

Variants, fixed before the run (after a pilot, below): for each embedding, k in {16, 64, 128}
at l2 = 1e-4, and l2 in {1e-3, 1e-2} at k = 64; k = 64, l2 = 1e-4 on the comparisons with
GPT-4 or Mixtral only; the same with seed 1 (optimisation noise); and a blend, the shipped LR
decision value plus the MF logit (k = 64, l2 = 1e-4), each standardised by its mean and
standard deviation on the training rows, equal weights. Every fit stops after at most 1,000
L-BFGS iterations (like RouteLLM's fixed epoch budget; most fits here stop there, see
``fits`` in the JSON).

The pilot fitted k = 64 on all of RouterBench train with l2 from 1e-5 to 1e-1 and looked at
*training* statistics only (the objective, the share of training comparisons ordered right,
the spread of the GPT-4-vs-Mixtral logit over the training prompts), never at a held-out
figure: at 1e-1 the projection collapses (the logit is constant), at 1e-2 nearly (its spread
0.1-0.2), at 1e-3 the n-gram SVD block is inert (the ``svd`` and ``structure`` fits reach the
same objective to four decimals), at 1e-5 the ``svd`` fit orders 82% of the training
comparisons right (memorising; 77% at 1e-4, 72% at 1e-3). So 1e-4, the weakest penalty short
of that, is the centre. 1,000 iterations against 3,000: the training logits correlate 0.96
(``svd``) and 0.995 (``structure``).

Protocols (the third series' harness, ``benchmarks.classifier_experiments``): 5-fold CV on
RouterBench train (APGR, CPT(50%), cost at 95% quality), leave-one-task-out, and transfer to
DC-Router train for qwen2.5-7b -> nemotron-51b, overall and within each prompt family. The MF
fitted on RouterBench has no embedding for DC-Router's models, so a DC-Router prompt is scored
with the same P(GPT-4 beats Mixtral) logit, as a transferred difficulty, exactly as every
other recipe's RouterBench-trained score is transferred. Paired bootstrap against the shipped
recipe (300 resamples, same rows) for CV, transfer, the mean LOTO APGR, the mean within-family
APGR and the criterion mean(CV APGR, transfer APGR) (rows of each set resampled separately).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from scipy.special import expit
from sklearn.decomposition import TruncatedSVD

from benchmarks.classifier_experiments import (
    DC_FAMILIES,
    DC_STRONG,
    DC_WEAK,
    STRONG,
    WEAK,
    Array,
    Recipe,
    cross_validate,
    grouped_paired_bootstrap,
    pair_counts,
    paired_bootstrap,
    shipped,
    summary_line,
    training_sets,
    transfer,
    weighted_logistic,
)
from benchmarks.static_embedding_experiments import leave_one_task_out_scores
from classifier.features import EMBEDDING_DIM, NGRAM_DIM

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "mf_router_experiments.json"
NGRAM_WEIGHT = 0.1  # the shipped n-gram factor
SVD_DIMS = 256
RULE = (
    "A variant replaces the shipped recipe only if (1) its gain on the criterion mean(CV APGR, "
    "transfer APGR) has a 95% paired-bootstrap interval (300 resamples, CV and transfer rows "
    "resampled separately, the same rows for both recipes) entirely above 0, AND (2) the "
    "paired-bootstrap point estimate of its gain in mean LOTO APGR is >= -0.005, AND (3) that "
    "of its gain in mean within-family transfer APGR is >= -0.005. Fixed before the run."
)
TOLERANCE = -0.005


@dataclass(frozen=True)
class MFConfig:
    inputs: str = "svd"  # "svd" (n-gram SVD + structure) or "structure"
    k: int = 64
    l2: float = 1e-4
    pairs: str = "all"  # "all" model pairs, or "anchor": pairs with GPT-4 or Mixtral only
    seed: int = 0
    max_iter: int = 1000


def _digest(*arrays: Array) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(str(a.shape).encode())
    return h.hexdigest()


def _matrix_digest(x: sp.csr_matrix) -> str:
    return _digest(x.indptr, x.indices, x.data)


class Inputs:
    """e_q from the project's embedding; the SVD is fitted on the training rows only."""

    def __init__(self, kind: str, x: sp.csr_matrix) -> None:
        self.kind = kind
        self.svd: TruncatedSVD | None = None
        if kind == "svd":
            self.svd = TruncatedSVD(SVD_DIMS, algorithm="randomized", random_state=0)
            self.svd.fit(x[:, :NGRAM_DIM] * NGRAM_WEIGHT)
        elif kind != "structure":
            raise ValueError(kind)

    def __call__(self, x: sp.csr_matrix) -> Array:
        structure = np.asarray(x[:, NGRAM_DIM:EMBEDDING_DIM].toarray(), dtype=np.float64)
        if self.svd is None:
            return structure
        reduced = self.svd.transform(x[:, :NGRAM_DIM] * NGRAM_WEIGHT)
        return np.hstack([reduced, structure])


_INPUTS: dict[tuple[str, str], Inputs] = {}


def inputs_for(kind: str, x: sp.csr_matrix) -> Inputs:
    key = (kind, _matrix_digest(x))
    if key not in _INPUTS:
        _INPUTS[key] = Inputs(kind, x)
    return _INPUTS[key]


def comparisons(y: Array, models: list[str], pairs: str) -> tuple[Array, Array]:
    """Incidence matrix (pairs x models: +1 for a, -1 for b) and per-prompt outcome of each
    pair (1: a right and b wrong, 0: the reverse, NaN: tie or a missing outcome)."""
    anchors = {models.index(STRONG), models.index(WEAK)}
    chosen = [
        (a, b)
        for a in range(len(models))
        for b in range(a + 1, len(models))
        if pairs == "all" or a in anchors or b in anchors
    ]
    incidence = np.zeros((len(chosen), len(models)))
    label = np.full((y.shape[0], len(chosen)), np.nan)
    for p, (a, b) in enumerate(chosen):
        incidence[p, a], incidence[p, b] = 1.0, -1.0
        decisive = ~np.isnan(y[:, a]) & ~np.isnan(y[:, b]) & (y[:, a] != y[:, b])
        label[decisive, p] = (y[decisive, a] > y[decisive, b]).astype(float)
    return incidence, label


@dataclass
class MFModel:
    inputs: Inputs
    w1: Array  # k x dim
    b: Array  # k
    u: Array  # models x k: w2 * v_m / |v_m|
    strong: int
    weak: int
    info: dict[str, Any]

    def logit(self, xt: sp.csr_matrix) -> Array:
        """log-odds that GPT-4 beats Mixtral on each prompt."""
        z = self.inputs(xt) @ self.w1.T + self.b
        return np.asarray(z @ (self.u[self.strong] - self.u[self.weak]))


def fit_mf(x: sp.csr_matrix, y: Array, models: list[str], cfg: MFConfig) -> MFModel:
    inputs = inputs_for(cfg.inputs, x)
    e = inputs(x)
    dim = e.shape[1]
    m, k = len(models), cfg.k
    incidence, label = comparisons(y, models, cfg.pairs)
    valid = ~np.isnan(label)
    target = np.nan_to_num(label)
    count = float(valid.sum())
    sizes = [k * dim, k, m * k, k]
    bounds = np.cumsum([0, *sizes])

    def unpack(theta: Array) -> tuple[Array, Array, Array, Array]:
        w1, b, v, w2 = (theta[bounds[i] : bounds[i + 1]] for i in range(4))
        return w1.reshape(k, dim), b, v.reshape(m, k), w2

    def objective(theta: Array) -> tuple[float, Array]:
        w1, b, v, w2 = unpack(theta)
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        vh = v / norm
        u = vh * w2
        z = e @ w1.T + b
        d = (z @ u.T) @ incidence.T  # n x pairs: s(a, q) - s(b, q)
        loss = float(np.sum(np.where(valid, np.logaddexp(0.0, d) - target * d, 0.0))) / count
        g_d = np.where(valid, expit(d) - target, 0.0) / count
        g_s = g_d @ incidence
        g_u = g_s.T @ z
        g_z = g_s @ u
        g_vh = g_u * w2
        g_v = (g_vh - vh * np.sum(vh * g_vh, axis=1, keepdims=True)) / norm
        value = loss + 0.5 * cfg.l2 * (float(np.sum(w1 * w1)) + float(np.sum(w2 * w2)))
        grad = np.concatenate(
            [
                (g_z.T @ e + cfg.l2 * w1).ravel(),
                g_z.sum(0),
                g_v.ravel(),
                np.sum(g_u * vh, axis=0) + cfg.l2 * w2,
            ]
        )
        return value, grad

    rng = np.random.default_rng(cfg.seed)
    scale = float(np.sqrt(np.mean(np.sum(e * e, axis=1))))
    theta0 = np.concatenate(
        [
            rng.normal(0.0, 1.0 / (scale * np.sqrt(k)), k * dim),
            np.zeros(k),
            rng.normal(0.0, 1.0, m * k),
            rng.normal(0.0, 1.0 / np.sqrt(k), k),
        ]
    )
    started = time.perf_counter()
    result = scipy.optimize.minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": cfg.max_iter, "maxfun": 2 * cfg.max_iter},
    )
    w1, b, v, w2 = unpack(result.x)
    u = v / np.linalg.norm(v, axis=1, keepdims=True) * w2
    d = ((e @ w1.T + b) @ u.T) @ incidence.T
    info = {
        "iterations": int(result.nit),
        "converged": bool(result.success),
        "message": str(result.message),
        "objective": float(result.fun),
        "train_comparisons": int(count),
        "train_pairs_ordered_right": float(np.mean((d[valid] > 0) == (target[valid] == 1))),
        "seconds": time.perf_counter() - started,
    }
    return MFModel(inputs, w1, b, u, models.index(STRONG), models.index(WEAK), info)


_FITS: dict[tuple[MFConfig, str], MFModel] = {}
FIT_LOG: list[dict[str, Any]] = []


def fitted(x: sp.csr_matrix, y: Array, models: list[str], cfg: MFConfig) -> MFModel:
    """One fit per (config, training rows): the blends reuse the MF variants' fits."""
    key = (cfg, _matrix_digest(x) + _digest(y))
    if key not in _FITS:
        _FITS[key] = fit_mf(x, y, models, cfg)
        FIT_LOG.append({"config": asdict(cfg), "rows": x.shape[0], **_FITS[key].info})
    return _FITS[key]


def mf(cfg: MFConfig) -> Recipe:
    def recipe(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
        return fitted(x, y, models, cfg).logit(xt)

    return recipe


def shipped_plus_mf(cfg: MFConfig) -> Recipe:
    """Shipped LR decision value + MF logit, each standardised on the training rows."""

    def recipe(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
        positive, negative, _ = pair_counts(y, models)
        parts: list[Callable[[sp.csr_matrix], Array]] = [
            weighted_logistic(x, positive, negative),
            fitted(x, y, models, cfg).logit,
        ]
        total = np.zeros(xt.shape[0])
        for score in parts:
            train = score(x)
            total += (score(xt) - train.mean()) / train.std()
        return total

    return recipe


CENTRE = 1e-4  # l2 of the centre variant (k = 64)
VARIANTS: dict[str, Recipe] = {"shipped": shipped}
for _kind in ("svd", "structure"):
    for _k in (16, 64, 128):
        VARIANTS[f"MF {_kind} k{_k} l2 {CENTRE:g}"] = mf(MFConfig(_kind, _k, CENTRE))
    for _l2 in (1e-3, 1e-2):
        VARIANTS[f"MF {_kind} k64 l2 {_l2:g}"] = mf(MFConfig(_kind, 64, _l2))
    VARIANTS[f"MF {_kind} k64 l2 {CENTRE:g}, GPT-4/Mixtral pairs only"] = mf(
        MFConfig(_kind, 64, CENTRE, pairs="anchor")
    )
    VARIANTS[f"MF {_kind} k64 l2 {CENTRE:g}, seed 1"] = mf(MFConfig(_kind, 64, CENTRE, seed=1))
    VARIANTS[f"shipped LR + MF {_kind} k64 (standardised, equal)"] = shipped_plus_mf(
        MFConfig(_kind, 64, CENTRE)
    )


def verdict(vs: dict[str, list[float]]) -> dict[str, Any]:
    conditions = {
        "criterion_interval_above_0": vs["criterion"][1] > 0,
        "loto_mean_point_ge_-0.005": vs["loto_mean"][0] >= TOLERANCE,
        "within_family_mean_point_ge_-0.005": vs["within_family_mean"][0] >= TOLERANCE,
    }
    return {"conditions": conditions, "replaces_shipped": all(conditions.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="variants to run (default all)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    started_all = time.perf_counter()
    results: dict[str, Any] = (
        json.loads(args.out.read_text()) if args.only is not None and args.out.exists() else {}
    )
    results["rule"] = RULE
    rb, dc = training_sets()
    ok_rb, w_rb, s_rb = rb.pair(WEAK, STRONG)
    ok_dc, w_dc, s_dc = dc.pair(DC_WEAK, DC_STRONG)
    family_dc = dc.family[ok_dc]
    print(f"loaded RouterBench {len(rb.texts)}, DC-Router {len(dc.texts)} train rows", flush=True)
    names = [n for n in VARIANTS if args.only is None or n in args.only or n == "shipped"]
    reference: tuple[Any, ...] | None = None
    for name in names:
        started = time.perf_counter()
        recipe = VARIANTS[name]
        fits_before = len(FIT_LOG)
        cv, cv_scores = cross_validate(recipe, rb)
        loto, loto_scores = leave_one_task_out_scores(recipe, rb)
        tr, tr_scores = transfer(recipe, rb, dc)
        fam_scores = {
            f: (tr_scores[family_dc == f], w_dc[ok_dc][family_dc == f], s_dc[ok_dc][family_dc == f])
            for f in DC_FAMILIES
        }
        pooled = {
            "cv": (cv_scores, w_rb[ok_rb], s_rb[ok_rb]),
            "transfer": (tr_scores, w_dc[ok_dc], s_dc[ok_dc]),
        }
        entry: dict[str, Any] = {
            "cv": cv,
            "loto": loto,
            "transfer": tr,
            "criterion": (cv["apgr"] + tr["apgr"]) / 2,
            "loto_mean": float(np.mean(list(loto.values()))),
            "within_family_mean": float(np.mean(list(tr["within_family"].values()))),
        }
        if name == "shipped":
            reference = (cv_scores, tr_scores, loto_scores, fam_scores, pooled)
        elif reference is not None:
            entry["vs_shipped"] = {
                "cv": paired_bootstrap(cv_scores, reference[0], w_rb[ok_rb], s_rb[ok_rb]),
                "transfer": paired_bootstrap(tr_scores, reference[1], w_dc[ok_dc], s_dc[ok_dc]),
                "loto_mean": grouped_paired_bootstrap(loto_scores, reference[2]),
                "within_family_mean": grouped_paired_bootstrap(fam_scores, reference[3]),
                "criterion": grouped_paired_bootstrap(pooled, reference[4]),
            }
            entry["rule"] = verdict(entry["vs_shipped"])
        entry["fits"] = FIT_LOG[fits_before:]
        entry["seconds"] = time.perf_counter() - started
        results[name] = entry
        line = summary_line(name, entry, started)
        if "rule" in entry:
            c = entry["vs_shipped"]["criterion"]
            line += f" | criterion {c[0]:+.3f} [{c[1]:+.3f}, {c[2]:+.3f}]"
            line += " REPLACES" if entry["rule"]["replaces_shipped"] else ""
        print(line, flush=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    winners = [
        n
        for n, e in results.items()
        if isinstance(e, dict) and e.get("rule", {}).get("replaces_shipped")
    ]
    results["verdict"] = winners or "none: the shipped recipe stays"
    results["runtime_seconds"] = time.perf_counter() - started_all
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"verdict: {results['verdict']}\nwrote {args.out}")


if __name__ == "__main__":
    main()
