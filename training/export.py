"""Export a fitted model to ONNX and write a versioned artifact directory.

The directory is assembled next to its destination and moved into place with renames, so a
server watching the model directory never sees half an artifact.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

from classifier.artifact import (
    FORMAT_VERSION,
    METADATA_FILE,
    MODEL_FILE,
    ONNX_INPUT,
    REPORT_FILE,
    ArtifactMetadata,
    sha256_of,
)
from classifier.features import EMBEDDING_DIM, FEATURE_SPEC
from training.errors import TrainingError

__all__ = ["check_replaceable", "to_onnx", "write_artifact"]

# Opset 15 is read by every onnxruntime this project supports (>= 1.20).
TARGET_OPSET = {"": 15, "ai.onnx.ml": 3}


def to_onnx(model: LogisticRegression) -> bytes:
    """The serialized ONNX model: input "embedding" [N, EMBEDDING_DIM] float32, outputs
    "label" and "probabilities" [N, 2]."""
    onnx_model = convert_sklearn(
        model,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, EMBEDDING_DIM]))],
        options={id(model): {"zipmap": False}},
        target_opset=TARGET_OPSET,
        # A fixed graph name: the default is a random UUID, and the bytes (hence the checksum
        # and the version) of a retrained artifact must depend on the data alone.
        name="difficulty_classifier",
    )
    return bytes(onnx_model.SerializeToString())


def write_artifact(
    out: pathlib.Path,
    model: LogisticRegression,
    *,
    weak_model: str,
    strong_model: str,
    recommended_threshold: float,
    thresholds: Mapping[str, float],
    training: Mapping[str, Any],
    metrics: Mapping[str, Any],
    report: Mapping[str, Any],
) -> ArtifactMetadata:
    """Write model.onnx, metadata.json and evaluation.json to ``out`` (replacing it)."""
    out = out.resolve()
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model_path = staging / MODEL_FILE
        model_path.write_bytes(to_onnx(model))
        digest = sha256_of(model_path)
        metadata = ArtifactMetadata(
            format_version=FORMAT_VERSION,
            version=f"{_slug(weak_model)}--{_slug(strong_model)}--{digest[:12]}",
            feature_spec=FEATURE_SPEC,
            embedding_dim=EMBEDDING_DIM,
            weak_model=weak_model,
            strong_model=strong_model,
            recommended_threshold=recommended_threshold,
            thresholds=dict(thresholds),
            model_file=MODEL_FILE,
            model_sha256=digest,
            created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            training=dict(training),
            metrics=dict(metrics),
        )
        _write_json(staging / METADATA_FILE, metadata.model_dump(mode="json"))
        _write_json(staging / REPORT_FILE, report)
        # mkdtemp makes the directory private; the server may run as another user.
        os.chmod(staging, 0o755)  # noqa: S103
        _replace_directory(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return metadata


def check_replaceable(out: pathlib.Path) -> None:
    """TrainingError unless ``out`` is absent, an empty directory, or an artifact directory:
    replacing it must never delete anything else (think ``--out .``)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise TrainingError(f"{out} exists and is not a directory")
    if any(out.iterdir()) and not (out / METADATA_FILE).is_file():
        raise TrainingError(f"refusing to replace {out}: it is not a classifier artifact")


def _replace_directory(new: pathlib.Path, destination: pathlib.Path) -> None:
    if not destination.exists():
        new.rename(destination)
        return
    retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
    destination.rename(retired)
    new.rename(destination)
    shutil.rmtree(retired, ignore_errors=True)


def _write_json(path: pathlib.Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _slug(model: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", model.rsplit("/", 1)[-1].lower()).strip("-")
