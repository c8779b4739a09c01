"""Choosing thresholds on training data (out-of-fold scores), never on evaluation data.

Two kinds of named operating points go into the artifact:

* ``quality_90`` / ``quality_95`` / ``quality_99``: the highest threshold whose routing reaches
  that share of the strong model's mean quality with the fewest strong calls;
* ``strong_share_5`` / ``_10`` / ``_20`` / ``_30`` / ``_50``: the threshold that sends about
  that share of the training prompts to the strong model (a task that should rarely escalate
  names a small share).

The recommended threshold is ``quality_95``: the playbook's "95% of frontier quality".
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from training.metrics import operating_point_at_quality

__all__ = ["RECOMMENDED", "choose_thresholds"]

FloatArray = npt.NDArray[np.float64]
RECOMMENDED = "quality_95"
QUALITY_TARGETS = (0.90, 0.95, 0.99)
STRONG_SHARES = (0.05, 0.10, 0.20, 0.30, 0.50)


def choose_thresholds(scores: FloatArray, weak: FloatArray, strong: FloatArray) -> dict[str, float]:
    """Named thresholds in [0, 1] for calibrated ``scores`` of the target pair's rows."""
    thresholds: dict[str, float] = {}
    # Costs do not change which point first reaches a quality; unit costs keep it simple.
    ones = np.ones_like(scores)
    for target in QUALITY_TARGETS:
        point = operating_point_at_quality(scores, weak, strong, 0.0 * ones, ones, target=target)
        # Unreachable (strong no better than weak): escalate nothing.
        threshold = 1.0 if point is None else min(point.threshold, 1.0)
        thresholds[f"quality_{round(target * 100)}"] = threshold
    for share in STRONG_SHARES:
        thresholds[f"strong_share_{round(share * 100)}"] = float(np.quantile(scores, 1.0 - share))
    return thresholds
