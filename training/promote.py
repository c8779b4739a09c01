"""Rolling out a retrained classifier: the candidate replaces the current one only if it routes
at least as well on held-out outcomes.

The current artifact is a symlink (`/models/current -> 20261130T030000Z`). Promotion points it at
the candidate with an atomic rename, and `previous` beside it at the artifact it replaces (to
roll back to; `training.models_dir`); every router watching the link notices and loads the new
artifact, and one that fails the router's own checks is refused there and the old one keeps
serving. A candidate that routes worse is left where it is, for a person to look at.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from classifier.errors import ArtifactError
from training.errors import TrainingError
from training.models_dir import PREVIOUS, promote_link
from training.pipeline import TEST_SPLIT, EvaluateConfig, evaluate

__all__ = ["Promotion", "promote"]

Echo = Callable[[str], None]
_COMPARED = ("apgr", "cpt50", "cost_ratio_at_95")


@dataclass(frozen=True, slots=True)
class Promotion:
    promoted: bool
    reason: str
    candidate: dict[str, Any]
    # The current artifact's figures on the same rows, when there is a current artifact.
    current: dict[str, Any] | None


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    return {key: report.get(key) for key in ("rows", *_COMPARED)} | {
        "version": report["artifact"]["version"]
    }


def promote(
    candidate: pathlib.Path,
    current: pathlib.Path,
    data: Sequence[pathlib.Path],
    *,
    weak: str,
    strong: str,
    split: str | None = TEST_SPLIT,
    min_gain: float = 0.0,
    min_rows: int = 100,
    echo: Echo = print,
) -> Promotion:
    """Evaluate both artifacts on the same rows and point `current` at `candidate` when its
    APGR is at least the current one's plus `min_gain` (or when there is no usable current).
    Fewer than `min_rows` comparable rows, or an APGR that is undefined (the two models equally
    good on these rows), decide nothing: the current artifact stays."""
    if current.exists() and not current.is_symlink():
        raise TrainingError(
            f"{current} is a directory, not a symlink: move it aside and link it "
            f"(ln -s <version> {current}) so promotions can replace it atomically"
        )
    previous = current.with_name(PREVIOUS)
    if previous.exists() and not previous.is_symlink():
        raise TrainingError(
            f"{previous} is not a symlink: move it aside, promotion links the artifact it "
            "replaces there"
        )

    def measure(model: pathlib.Path) -> dict[str, Any]:
        config = EvaluateConfig(tuple(data), weak, strong, model, split=split)
        return _figures(evaluate(config, echo).report)

    ours = measure(candidate)
    if ours["rows"] < min_rows:
        too_few = (
            f"only {ours['rows']} held-out rows with outcomes of both {weak} and {strong} "
            f"(needs {min_rows})"
        )
        if not current.exists():
            return Promotion(
                False, f"promoted nothing, and there is no current artifact: {too_few}", ours, None
            )
        return Promotion(False, f"kept the current artifact: {too_few}", ours, None)
    theirs = None
    reason = "no current artifact"
    if current.exists():
        try:
            theirs = measure(current.resolve())
        except ArtifactError as exc:
            reason = f"the current artifact does not load ({exc})"
        else:
            if ours["apgr"] is None or theirs["apgr"] is None:
                return Promotion(
                    False,
                    f"kept {theirs['version']}: APGR is undefined on these rows (the weak and "
                    "strong models score alike), so they cannot tell the two apart",
                    ours,
                    theirs,
                )
            gain = ours["apgr"] - theirs["apgr"]
            if gain < min_gain:
                return Promotion(
                    False,
                    f"kept {theirs['version']}: candidate APGR {ours['apgr']:.3f} vs "
                    f"{theirs['apgr']:.3f} (needs a gain of {min_gain:+.3f})",
                    ours,
                    theirs,
                )
            reason = f"APGR {ours['apgr']:.3f} vs {theirs['apgr']:.3f} ({gain:+.3f})"
    promote_link(current, candidate)
    return Promotion(True, f"promoted {ours['version']}: {reason}", ours, theirs)
