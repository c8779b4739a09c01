"""The two workflows behind the command line: train an artifact, evaluate one.

Heavy libraries (scikit-learn, skl2onnx, matplotlib) are imported by the modules used here,
and this module is imported only when a command runs.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import scipy.sparse as sp

from classifier.artifact import ArtifactMetadata
from classifier.features import EMBEDDING_DIM, embed, prompt_text
from classifier.scorer import DifficultyScorer, load_scorer
from training.costs import pair_costs
from training.dataset import OutcomeFile, OutcomeRow, no_pair, question_key, read_outcomes
from training.errors import DatasetError, NoDataError
from training.evaluation import PairEvaluation, evaluate_pair
from training.export import check_replaceable, to_onnx, write_artifact
from training.labels import pair_outcomes, training_targets
from training.model import ModelConfig, train_model
from training.progress import progress
from training.thresholds import RECOMMENDED, choose_thresholds

# Rows marked with this split are for evaluation: `train` never reads them.
TEST_SPLIT = "test"

__all__ = ["EvaluateConfig", "TrainConfig", "evaluate", "train"]

Echo = Callable[[str], None]
PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True, slots=True)
class TrainConfig:
    data: tuple[pathlib.Path, ...]
    weak: str
    strong: str
    out: pathlib.Path
    exclude: tuple[pathlib.Path, ...] = ()
    margin: float = 0.0
    target_weight: float = 1.0
    auxiliary_weight: float = 1.0
    auxiliary_min_quality: float = 0.6
    model: ModelConfig = field(default_factory=ModelConfig)


@dataclass(frozen=True, slots=True)
class EvaluateConfig:
    data: tuple[pathlib.Path, ...]
    weak: str
    strong: str
    model: pathlib.Path
    margin: float = 0.0
    prices_per_mtok: dict[str, float] = field(default_factory=dict)
    # Only rows of this split (None: every row).
    split: str | None = None


def train(config: TrainConfig, echo: Echo = print) -> tuple[ArtifactMetadata, PairEvaluation]:
    """Train, calibrate, choose thresholds, export and write the artifact to ``config.out``."""
    check_replaceable(config.out)  # before the work, not after it
    files = _read(config.data, echo)
    rows = [row for outcome_file in files for row in outcome_file.rows]
    # Rows marked for evaluation never reach training, whatever file they come in.
    held_out = sum(row.split == TEST_SPLIT for row in rows)
    if held_out:
        rows = [row for row in rows if row.split != TEST_SPLIT]
        echo(f"left out {held_out} rows marked split={TEST_SPLIT}: they are for evaluation only")
    rows, excluded, exclude_files = _without_excluded(rows, config.exclude, echo)
    targets = training_targets(
        rows,
        config.weak,
        config.strong,
        margin=config.margin,
        target_weight=config.target_weight,
        auxiliary_weight=config.auxiliary_weight,
        auxiliary_min_quality=config.auxiliary_min_quality,
    )
    without_pair = len(rows) - len(targets.rows)
    if without_pair:
        echo(
            f"skipped {without_pair} of {len(rows)} rows lacking a usable pair of outcomes "
            f"({config.weak} and {config.strong}, or an auxiliary pair)"
        )
    target_rows = np.flatnonzero(targets.has_target_pair)
    if len(target_rows) == 0:
        raise NoDataError(no_pair(config.weak, config.strong, (row.outcomes for row in rows)))
    pair = pair_outcomes(
        [targets.rows[i] for i in target_rows], config.weak, config.strong, config.margin
    )
    echo(
        f"training on {len(targets.rows)} prompts ({len(target_rows)} with the target pair, "
        f"{int(pair.labels.sum())} where {config.weak} falls short)"
    )
    features = _embed(targets.rows, "embedding prompts")
    echo(f"cross-validating ({config.model.folds} folds) and fitting")
    trained = train_model(
        features,
        targets.positive,
        targets.negative,
        target_rows=target_rows,
        target_labels=pair.labels,
        config=config.model,
    )
    thresholds = choose_thresholds(trained.out_of_fold, pair.weak_scores, pair.strong_scores)
    costs = pair_costs(pair.rows, config.weak, config.strong)
    evaluation = evaluate_pair(
        pair.rows,
        trained.out_of_fold,
        pair.weak_scores,
        pair.strong_scores,
        costs,
        threshold=thresholds[RECOMMENDED],
    )
    report = {
        "kind": "out-of-fold predictions on the training data",
        "weak_model": config.weak,
        "strong_model": config.strong,
        **evaluation.report,
    }
    training_summary: dict[str, Any] = {
        "data": [_data_file(outcome_file) for outcome_file in files],
        "excluded_prompts_from": [_data_file(outcome_file) for outcome_file in exclude_files],
        "excluded_rows": excluded,
        "test_rows_left_out": held_out,
        "rejected_lines": sum(len(f.rejected) for f in files),
        "rows": len(targets.rows),
        "target_pair_rows": len(target_rows),
        "target_pair_positive": int(pair.labels.sum()),
        "rows_without_any_pair": without_pair,
        "pairs": [
            {"source": source, "reference": reference, "weaker": list(weaker)}
            for source, reference, weaker in targets.pairs
        ],
        "margin": config.margin,
        "target_weight": config.target_weight,
        "auxiliary_weight": config.auxiliary_weight,
        "auxiliary_min_quality": config.auxiliary_min_quality,
        "model": {"kind": "LogisticRegression+Platt", **asdict(config.model)},
        "platt": list(trained.platt),
    }
    parity = _parity(trained.model, features[target_rows[:200]])
    training_summary["onnx_parity_max_abs_diff"] = parity
    metrics = {
        key: report[key]
        for key in ("apgr", "cpt50", "cpt80", "strong_share_at_95", "cost_ratio_at_95")
    }
    metadata = write_artifact(
        config.out,
        trained.model,
        weak_model=config.weak,
        strong_model=config.strong,
        recommended_threshold=thresholds[RECOMMENDED],
        thresholds=thresholds,
        training=training_summary,
        metrics={"out_of_fold": metrics},
        report=report,
    )
    return metadata, PairEvaluation(report=report, curves=evaluation.curves)


def evaluate(config: EvaluateConfig, echo: Echo = print) -> PairEvaluation:
    """Score every row with the artifact and compare it with the baselines."""
    scorer = load_scorer(config.model)
    if (scorer.weak_model, scorer.strong_model) != (config.weak, config.strong):
        echo(
            f"note: artifact trained for {scorer.weak_model} -> {scorer.strong_model}, "
            f"evaluated on {config.weak} -> {config.strong}"
        )
    files = _read(config.data, echo)
    rows = [row for outcome_file in files for row in outcome_file.rows]
    if config.split is not None:
        splits = sorted({str(row.split) for row in rows})
        rows = [row for row in rows if row.split == config.split]
        if not rows:
            raise NoDataError(
                f"no row is marked split={config.split}; the data's splits: {', '.join(splits)}"
            )
        echo(f"evaluating the {len(rows)} rows marked split={config.split}")
    pair = pair_outcomes(rows, config.weak, config.strong, config.margin)
    if pair.skipped:
        echo(f"skipped {pair.skipped} of {len(rows)} rows lacking an outcome of either model")
    if not pair.rows:
        raise NoDataError(no_pair(config.weak, config.strong, (row.outcomes for row in rows)))
    scores = _score(scorer, pair.rows)
    costs = pair_costs(pair.rows, config.weak, config.strong, config.prices_per_mtok)
    evaluation = evaluate_pair(
        pair.rows,
        scores,
        pair.weak_scores,
        pair.strong_scores,
        costs,
        threshold=scorer.recommended_threshold,
    )
    report = {
        "artifact": {
            "path": str(scorer.path),
            "version": scorer.version,
            "weak_model": scorer.weak_model,
            "strong_model": scorer.strong_model,
            "recommended_threshold": scorer.recommended_threshold,
        },
        "data": [str(path) for path in config.data],
        "split": config.split,
        "weak_model": config.weak,
        "strong_model": config.strong,
        "rows_total": len(rows),
        "rows_skipped": pair.skipped,
        "rows_skipped_reason": "lacking an outcome of the weak or the strong model",
        "rejected_lines": sum(len(f.rejected) for f in files),
        **evaluation.report,
    }
    return PairEvaluation(report=report, curves=evaluation.curves)


def _read(paths: Sequence[pathlib.Path], echo: Echo) -> list[OutcomeFile]:
    files = []
    for path in paths:
        outcome_file = read_outcomes(path)
        if outcome_file.rejected:
            number, reason = outcome_file.rejected[0]
            echo(
                f"{path}: rejected {len(outcome_file.rejected)} malformed lines "
                f"(first: line {number}: {reason})"
            )
        if not outcome_file.rows:
            raise DatasetError(
                f"{path} holds no outcome rows: expected outcome JSONL, one JSON object a line "
                "(docs/OUTCOMES.md)"
            )
        files.append(outcome_file)
    return files


def _without_excluded(
    rows: list[OutcomeRow], exclude: Sequence[pathlib.Path], echo: Echo
) -> tuple[list[OutcomeRow], int, list[OutcomeFile]]:
    """The rows whose prompt is in none of the `exclude` files, how many were left out, and
    those files (only their prompts are used, to keep the same questions out of training)."""
    if not exclude:
        return rows, 0, []
    files = [read_outcomes(path) for path in exclude]
    keys = {question_key(row.messages) for outcome_file in files for row in outcome_file.rows}
    kept = [row for row in rows if question_key(row.messages) not in keys]
    echo(f"excluded {len(rows) - len(kept)} training rows whose prompt appears in --exclude")
    return kept, len(rows) - len(kept), files


def _embed(rows: Sequence[OutcomeRow], label: str) -> sp.csr_matrix:
    # Row by row into a sparse matrix: the dense matrix would need gigabytes.
    blocks = []
    chunk: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    for row in progress(rows, label, unit="prompt"):
        chunk.append(embed(prompt_text(row.messages)))
        if len(chunk) == 512:
            blocks.append(sp.csr_matrix(np.vstack(chunk)))
            chunk = []
    if chunk:
        blocks.append(sp.csr_matrix(np.vstack(chunk)))
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, EMBEDDING_DIM))


def _score(scorer: DifficultyScorer, rows: Sequence[OutcomeRow]) -> np.ndarray[Any, Any]:
    return np.array(
        [scorer.score(row.messages) for row in progress(rows, "scoring", unit="prompt")],
        dtype=np.float64,
    )


def _parity(model: Any, features: sp.csr_matrix) -> float:
    """Max |ONNX - scikit-learn| probability on some training rows; refuses to ship a model
    whose ONNX export disagrees by more than ``PARITY_TOLERANCE``."""
    dense = features.toarray().astype(np.float32)
    session = ort.InferenceSession(to_onnx(model), providers=["CPUExecutionProvider"])
    (onnx_probabilities,) = session.run(["probabilities"], {"embedding": dense})
    reference = model.predict_proba(dense.astype(np.float64))
    difference = float(np.max(np.abs(onnx_probabilities - reference)))
    if difference > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX export disagrees with scikit-learn by {difference:.2e}")
    return difference


def _data_file(outcome_file: OutcomeFile) -> dict[str, str]:
    """How the metadata names a data file: its folder and name, which say which data set it is,
    and the SHA-256 of the bytes trained on, which says which version. Not the path it was read
    from, so that the same data trained on from another checkout writes the same metadata."""
    path = outcome_file.path.resolve()
    return {"file": f"{path.parent.name}/{path.name}", "sha256": outcome_file.sha256}
