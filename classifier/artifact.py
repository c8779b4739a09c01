"""The on-disk layout of a classifier artifact and the schema of its metadata.

An artifact is a directory::

    model.onnx         the calibrated model: input "embedding" (float32, [N, EMBEDDING_DIM]),
                       output "probabilities" (float32, [N, 2]); column 1 is the score
    metadata.json      ArtifactMetadata below
    evaluation.json    the evaluation report written by training (metrics on training data)

The metadata is validated into a frozen model that rejects unknown keys, so a file written by
another format version fails loudly instead of being half understood.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from classifier.errors import ArtifactError

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "MODEL_FILE",
    "ONNX_INPUT",
    "ONNX_OUTPUT",
    "REPORT_FILE",
    "ArtifactMetadata",
    "read_metadata",
    "sha256_of",
]

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
MODEL_FILE = "model.onnx"
REPORT_FILE = "evaluation.json"
ONNX_INPUT = "embedding"
ONNX_OUTPUT = "probabilities"


class ArtifactMetadata(BaseModel):
    """What an artifact says about itself; the loader checks every field against the code."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int
    version: str = Field(min_length=1)
    feature_spec: str = Field(min_length=1)
    embedding_dim: int = Field(gt=0)
    weak_model: str = Field(min_length=1)
    strong_model: str = Field(min_length=1)
    recommended_threshold: float = Field(ge=0.0, le=1.0)
    # Named operating points chosen on training data, e.g. "quality_95": 0.41.
    thresholds: dict[str, float]
    model_file: str = MODEL_FILE
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: str
    # Free-form summaries for people: data used, parameters, cross-validated metrics.
    training: dict[str, Any]
    metrics: dict[str, Any]


def read_metadata(directory: pathlib.Path) -> ArtifactMetadata:
    """The validated metadata of the artifact in ``directory``; ArtifactError if unusable."""
    path = directory / METADATA_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{directory}: no {METADATA_FILE}; not a classifier artifact") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable metadata: {exc}") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: metadata must be a JSON object")
    found_version = raw.get("format_version")
    if found_version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format version {found_version!r}, this code reads {FORMAT_VERSION}"
        )
    try:
        return ArtifactMetadata.model_validate(raw)
    except ValidationError as exc:
        # Where and what, never the values: a message may reach an admin client or a log.
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'metadata'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise ArtifactError(f"{path}: invalid metadata: {problems}") from None


def sha256_of(path: pathlib.Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
