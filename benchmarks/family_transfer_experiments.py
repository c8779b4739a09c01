"""A fifth series of classifier experiments: does DC-Router train help on unseen task families?

Run: ``python -m benchmarks.family_transfer_experiments`` (about a minute on one core). Reads
the *train* splits of ../shared/data (RouterBench 0-shot and DC-Router) and nothing else: no
test split is opened, not even for its prompts, so the RouterBench training rows here include
the 2 whose prompt also appears in its test split (the shipped training leaves them out).
Prints a table and writes ``benchmarks/results/family_transfer_experiments.json``.

Question: the shipped artifact is trained on RouterBench train only. Would adding DC-Router
train make it better on task families it has never seen? Method, leave-one-family-out (LOFO)
over all families of both data sets: the 3 RouterBench tasks (ARC, MBPP, Winogrande) and the
DC-Router prompt families found by ``dc_family``. A family is held out only if its own pair
(RouterBench: Mixtral -> GPT-4; DC-Router: qwen2.5-7b -> nemotron-51b) has a quality gap of
at least 0.03 and it has at least 80 rows with both outcomes; skipped families stay in the
training data. For each held-out set the shipped recipe (``shipped``: weighted logistic
regression, n-grams x 0.1, C = 3, auxiliary pairs computed within each source as
training/labels.py does: on RouterBench every model within 0.6x..1x of GPT-4's mean against
GPT-4, plus Mixtral; on DC-Router, which lacks GPT-4, every model within 0.6x..1x of the
source's best model by mean against that model) is trained on

* (a) RouterBench train only, less the held-out families;
* (b) RouterBench train + DC-Router train, less the held-out families;

and the held-out rows are scored; APGR and CPT(50%) are computed with the held-out source's
own pair. Held-out sets: every single family, and every pair of families from the same source
(the *mixed* evaluation: APGR on the union of two unseen families, which also asks whether
the model orders unseen families against each other). A paired bootstrap (300 resamples of
the held-out rows, the same for (a) and (b)) gives the interval of (b) - (a) per set, and,
resampling within each set, of the mean over sets. RouterBench 5-fold cross-validation
(``cross_validate``, the same folds) with the DC-Router rows added to every training fold
only checks that in-distribution quality does not fall.

Decision rule, fixed before the run: adopt (b) only if the mean single-family LOFO
difference (b) - (a) has a 95% bootstrap interval above 0, AND the mean mixed-pair
difference (point estimate) is >= 0, AND RouterBench CV APGR of (b) is no more than 0.01
below that of (a) (point estimate).
"""

from __future__ import annotations

import itertools
import json
import pathlib
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.classifier_experiments import (
    BOOTSTRAP,
    DATA,
    DC_STRONG,
    DC_WEAK,
    STRONG,
    WEAK,
    Array,
    Dataset,
    cross_validate,
    grouped_paired_bootstrap,
    load,
    metrics,
    pair_counts,
    paired_bootstrap,
    shipped,
    weighted_logistic,
)
from training.dataset import read_outcomes
from training.labels import training_targets

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "family_transfer_experiments.json"
MIN_GAP, MIN_ROWS, FLOOR = 0.03, 80, 0.6
RULE = (
    "Adopt (b) RouterBench + DC-Router train only if (1) the mean over held-out single "
    "families of APGR(b) - APGR(a) has a 95% paired-bootstrap interval (300 resamples, rows "
    "resampled within each family) entirely above 0, AND (2) the mean over held-out "
    "same-source family pairs of APGR(b) - APGR(a) (point estimate) is >= 0, AND (3) "
    "RouterBench 5-fold CV APGR(b) - APGR(a) (point estimate, same folds) is >= -0.01. "
    "Fixed before the run."
)


def source_counts(outcomes: Array, models: list[str]) -> tuple[Array, Array, str]:
    """training/labels.py's per-source weights: the reference is GPT-4 where the source has it
    (then ``pair_counts``, the shipped recipe's own), else the source's best model by mean."""
    if STRONG in models:
        positive, negative, _ = pair_counts(outcomes, models, FLOOR)
        return positive, negative, STRONG
    means = np.nanmean(outcomes, axis=0)
    top = max(range(len(models)), key=lambda j: (means[j], models[j]))
    weaker = [
        j for j in range(len(models)) if j != top and FLOOR * means[top] <= means[j] < means[top]
    ]
    strong, weak = outcomes[:, [top]], outcomes[:, weaker]
    valid = ~np.isnan(weak) & ~np.isnan(strong)
    positive = np.where(valid, (strong - weak) > 0, False).sum(1).astype(float)
    negative = np.where(valid, (strong - weak) <= 0, False).sum(1).astype(float)
    return positive, negative, models[top]


def check_counts(path: pathlib.Path, data: Dataset) -> None:
    """The weights above equal training_targets' on the whole file (rows it keeps)."""
    rows = [row for row in read_outcomes(path).rows if row.split != "test"]
    targets = training_targets(rows, WEAK, STRONG, auxiliary_min_quality=FLOOR)
    positive, negative, _ = source_counts(data.outcomes, data.models)
    kept = positive + negative > 0
    assert kept.sum() == len(targets.rows), (kept.sum(), len(targets.rows))
    assert np.array_equal(positive[kept], targets.positive)
    assert np.array_equal(negative[kept], targets.negative)


class Trainer:
    """Fits the shipped recipe on RouterBench (less some tasks) and optionally DC-Router (less
    some families), scores every row of both sets, and caches by training set."""

    def __init__(self, rb: Dataset, dc: Dataset) -> None:
        self.rb, self.dc = rb, dc
        self.cache: dict[tuple[Any, ...], dict[str, Any]] = {}

    def scores(self, rb_out: frozenset[str], dc_out: frozenset[str] | None) -> dict[str, Any]:
        """``dc_out`` None: (a), RouterBench only. Else (b), with DC-Router less ``dc_out``."""
        key = (rb_out, dc_out)
        if key in self.cache:
            return self.cache[key]
        rb, dc = self.rb, self.dc
        rb_train = ~np.isin(rb.family, list(rb_out))
        xt = sp.vstack([rb.embeddings, dc.embeddings], format="csr")
        info: dict[str, Any] = {"rb_rows": int(rb_train.sum())}
        if dc_out is None:
            # (a) is exactly the shipped recipe on RouterBench rows.
            all_scores = shipped(rb.embeddings[rb_train], rb.outcomes[rb_train], rb.models, xt)
        else:
            dc_train = ~np.isin(dc.family, list(dc_out))
            p_rb, n_rb, _ = source_counts(rb.outcomes[rb_train], rb.models)
            p_dc, n_dc, reference = source_counts(dc.outcomes[dc_train], dc.models)
            x = sp.vstack([rb.embeddings[rb_train], dc.embeddings[dc_train]], format="csr")
            all_scores = weighted_logistic(x, np.r_[p_rb, p_dc], np.r_[n_rb, n_dc])(xt)
            info |= {"dc_rows": int(dc_train.sum()), "dc_reference": reference}
        info["rb"], info["dc"] = all_scores[: len(rb.texts)], all_scores[len(rb.texts) :]
        self.cache[key] = info
        return info


def family_table(rb: Dataset, dc: Dataset) -> dict[str, dict[str, Any]]:
    table = {}
    for source, data, weak, strong in (("RB", rb, WEAK, STRONG), ("DC", dc, DC_WEAK, DC_STRONG)):
        ok, w, s = data.pair(weak, strong)
        for name in sorted(set(data.family)):
            rows = ok & (data.family == name)
            gap = float(np.mean(s[rows]) - np.mean(w[rows]))
            reasons = []
            if gap < MIN_GAP:
                reasons.append(f"quality gap {gap:+.3f} < {MIN_GAP}")
            if rows.sum() < MIN_ROWS:
                reasons.append(f"{int(rows.sum())} rows < {MIN_ROWS}")
            table[f"{source}:{name}"] = {
                "source": source,
                "family": name,
                "rows": int(rows.sum()),
                "weak_quality": float(np.mean(w[rows])),
                "strong_quality": float(np.mean(s[rows])),
                "gap": gap,
                "positives": int(np.sum(s[rows] - w[rows] > 0)),
                "skipped": "; ".join(reasons) or None,
            }
    return table


def evaluate_set(
    trainer: Trainer, source: str, held: tuple[str, ...]
) -> tuple[dict[str, Any], tuple[Array, Array, Array, Array]]:
    rb, dc = trainer.rb, trainer.dc
    out = frozenset(held)
    if source == "RB":
        a = trainer.scores(out, None)
        b = trainer.scores(out, frozenset())
        data, weak, strong, part = rb, WEAK, STRONG, "rb"
    else:
        a = trainer.scores(frozenset(), None)
        b = trainer.scores(frozenset(), out)
        data, weak, strong, part = dc, DC_WEAK, DC_STRONG, "dc"
    ok, w, s = data.pair(weak, strong)
    rows = ok & np.isin(data.family, list(held))
    sa, sb, w, s = a[part][rows], b[part][rows], w[rows], s[rows]
    ma, mb = metrics(sa, w, s), metrics(sb, w, s)
    entry = {
        "source": source,
        "held_out": list(held),
        "n": int(rows.sum()),
        "positives": int(np.sum(s - w > 0)),
        "train_rows_a": a["rb_rows"],
        "train_rows_b": b["rb_rows"] + b["dc_rows"],
        "dc_reference_b": b["dc_reference"],
        "a": {"apgr": ma["apgr"], "cpt50": ma["cpt50"]},
        "b": {"apgr": mb["apgr"], "cpt50": mb["cpt50"]},
        "diff": mb["apgr"] - ma["apgr"],
        # [mean, 2.5%, 97.5%] of APGR(b) - APGR(a) over resamples of the held-out rows.
        "diff_bootstrap": paired_bootstrap(sb, sa, w, s),
    }
    return entry, (sa, sb, w, s)


def mean_bootstrap(sets: list[tuple[Array, Array, Array, Array]]) -> list[float]:
    """[mean, 2.5%, 97.5%] of the mean over sets of APGR(b) - APGR(a), rows resampled within
    each set, the same resample for (a) and (b)."""
    return grouped_paired_bootstrap(
        {str(k): (sb, w, s) for k, (_, sb, w, s) in enumerate(sets)},
        {str(k): (sa, w, s) for k, (sa, _, w, s) in enumerate(sets)},
    )


def cv_recipe_with_dc(dc: Dataset) -> Any:
    """The shipped recipe on a RouterBench training fold plus all DC-Router train rows."""
    p_dc, n_dc, _ = source_counts(dc.outcomes, dc.models)

    def recipe(x: sp.csr_matrix, y: Array, models: list[str], xt: sp.csr_matrix) -> Array:
        p_rb, n_rb, _ = source_counts(y, models)
        stacked = sp.vstack([x, dc.embeddings], format="csr")
        return weighted_logistic(stacked, np.r_[p_rb, p_dc], np.r_[n_rb, n_dc])(xt)

    return recipe


def fmt(d: list[float]) -> str:
    return f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"


def main() -> None:
    started = time.perf_counter()
    rb_path = DATA / "routerbench-0shot" / "train.jsonl"
    dc_path = DATA / "dcrouter" / "train.jsonl"
    rb, dc = load(rb_path), load(dc_path, families=True)
    check_counts(rb_path, rb)
    check_counts(dc_path, dc)
    print(f"loaded RouterBench {len(rb.texts)}, DC-Router {len(dc.texts)} train rows", flush=True)

    families = family_table(rb, dc)
    for name, f in families.items():
        print(
            f"  {name:16s} n {f['rows']:5d} weak {f['weak_quality']:.3f}"
            f" strong {f['strong_quality']:.3f} gap {f['gap']:+.3f}"
            + (f"  SKIPPED: {f['skipped']}" if f["skipped"] else "")
        )
    used = {
        source: [
            f["family"] for f in families.values() if f["source"] == source and not f["skipped"]
        ]
        for source in ("RB", "DC")
    }
    trainer = Trainer(rb, dc)
    results: dict[str, Any] = {"single": {}, "pairs": {}}
    raw: dict[str, list[tuple[Array, Array, Array, Array]]] = {"single": [], "pairs": []}
    header = f"{'held out':24s} {'n':>5s} {'APGR a':>7s} {'APGR b':>7s}  (b) - (a) [95%]"
    header += f"          {'CPT50 a':>7s} {'CPT50 b':>7s}"
    for kind in ("single", "pairs"):
        print(f"\n{kind}:\n{header}", flush=True)
        for source in ("RB", "DC"):
            size = 1 if kind == "single" else 2
            for held in itertools.combinations(used[source], size):
                t0 = time.perf_counter()
                entry, arrays = evaluate_set(trainer, source, held)
                name = f"{source}:" + "+".join(held)
                results[kind][name] = entry
                raw[kind].append(arrays)
                print(
                    f"{name:24s} {entry['n']:5d} {entry['a']['apgr']:7.3f}"
                    f" {entry['b']['apgr']:7.3f}  {entry['diff']:+.3f}"
                    f" [{entry['diff_bootstrap'][1]:+.3f}, {entry['diff_bootstrap'][2]:+.3f}]"
                    f" {entry['a']['cpt50']:7.3f} {entry['b']['cpt50']:7.3f}"
                    f"  ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )

    means = {}
    for kind in ("single", "pairs"):
        entries = list(results[kind].values())
        means[kind] = {
            "sets": len(entries),
            "a": float(np.mean([e["a"]["apgr"] for e in entries])),
            "b": float(np.mean([e["b"]["apgr"] for e in entries])),
            "diff": float(np.mean([e["diff"] for e in entries])),
            "diff_bootstrap": mean_bootstrap(raw[kind]),
        }
        for source in ("RB", "DC"):
            part = [e["diff"] for e in entries if e["source"] == source]
            means[kind][f"diff_{source}"] = float(np.mean(part)) if part else None
        m = means[kind]
        print(
            f"mean {kind:7s} ({m['sets']} sets): a {m['a']:.3f} b {m['b']:.3f}"
            f" diff {m['diff']:+.3f}, bootstrap {fmt(m['diff_bootstrap'])}"
            f" (RB sets {m['diff_RB']:+.3f}, DC sets {m['diff_DC']:+.3f})",
            flush=True,
        )

    t0 = time.perf_counter()
    ok, w, s = rb.pair(WEAK, STRONG)
    cv_a, scores_a = cross_validate(shipped, rb)
    cv_b, scores_b = cross_validate(cv_recipe_with_dc(dc), rb)
    cv = {
        "a": cv_a,
        "b": cv_b,
        "diff": cv_b["apgr"] - cv_a["apgr"],
        "diff_bootstrap": paired_bootstrap(scores_b, scores_a, w[ok], s[ok]),
    }
    print(
        f"\nRouterBench 5-fold CV: a APGR {cv_a['apgr']:.3f} CPT50 {cv_a['cpt50']:.3f}"
        f" | b APGR {cv_b['apgr']:.3f} CPT50 {cv_b['cpt50']:.3f}"
        f" | diff {cv['diff']:+.3f}, bootstrap {fmt(cv['diff_bootstrap'])}"
        f"  ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )

    conditions = {
        "single_interval_above_0": means["single"]["diff_bootstrap"][1] > 0,
        "pairs_mean_diff_ge_0": means["pairs"]["diff"] >= 0,
        "cv_drop_le_0.01": cv["diff"] >= -0.01,
    }
    verdict = "adopt (b)" if all(conditions.values()) else "keep (a): RouterBench train only"
    print(f"\nrule: {RULE}\nconditions: {conditions}\nverdict: {verdict}")
    runtime = time.perf_counter() - started
    results = {
        "description": __doc__.split("\n")[0],
        "data": {
            "routerbench_train_rows": len(rb.texts),
            "dcrouter_train_rows": len(dc.texts),
            "note": "train splits only; no test split opened (so no prompt dedup against it)",
        },
        "rule": RULE,
        "families": families,
        "skipped": {n: f["skipped"] for n, f in families.items() if f["skipped"]},
        **results,
        "means": means,
        "cv": cv,
        "conditions": conditions,
        "verdict": verdict,
        "bootstrap_resamples": BOOTSTRAP,
        "fits": len(trainer.cache) + 10,
        "runtime_seconds": round(runtime, 1),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"run time {runtime:.0f} s; wrote {RESULTS}")


if __name__ == "__main__":
    main()
