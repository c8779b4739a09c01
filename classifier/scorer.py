"""Serving-side scoring: load a checked artifact once, then score prompts synchronously.

Imports onnxruntime and numpy only (never scikit-learn), so the serving image stays small.
``load_scorer`` refuses anything it cannot vouch for with ``ArtifactError``; the server keeps
its current scorer when a reload fails.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import onnxruntime as ort

from classifier.artifact import (
    ONNX_INPUT,
    ONNX_OUTPUT,
    ArtifactMetadata,
    read_metadata,
    sha256_of,
)
from classifier.errors import ArtifactError
from classifier.features import EMBEDDING_DIM, FEATURE_SPEC, embed, prompt_text

__all__ = ["DEFAULT_ARTIFACT", "DifficultyScorer", "load_scorer"]

DEFAULT_ARTIFACT = pathlib.Path(__file__).resolve().parent / "artifacts" / "default"


class DifficultyScorer:
    """Scores chat requests with one loaded artifact. Build it with ``load_scorer``."""

    def __init__(
        self, path: pathlib.Path, metadata: ArtifactMetadata, session: ort.InferenceSession
    ) -> None:
        self._path = path
        self._metadata = metadata
        self._session = session

    @property
    def version(self) -> str:
        return self._metadata.version

    @property
    def weak_model(self) -> str:
        return self._metadata.weak_model

    @property
    def strong_model(self) -> str:
        return self._metadata.strong_model

    @property
    def recommended_threshold(self) -> float:
        return self._metadata.recommended_threshold

    @property
    def feature_spec(self) -> str:
        return self._metadata.feature_spec

    @property
    def path(self) -> pathlib.Path:
        return self._path

    @property
    def metadata(self) -> ArtifactMetadata:
        return self._metadata

    def score(self, messages: Sequence[tuple[str, str]]) -> float:
        """Probability in [0, 1] that the weak model's answer falls short of the strong one's."""
        return self.score_text(prompt_text(messages))

    def score_text(self, text: str) -> float:
        """The score of an already extracted prompt text (see ``features.prompt_text``)."""
        embedding = embed(text).reshape(1, EMBEDDING_DIM)
        (probabilities,) = self._session.run([ONNX_OUTPUT], {ONNX_INPUT: embedding})
        return min(max(float(probabilities[0, 1]), 0.0), 1.0)

    def __repr__(self) -> str:
        return f"DifficultyScorer(version={self.version!r}, path={str(self._path)!r})"


def load_scorer(path: pathlib.Path) -> DifficultyScorer:
    """Load and check the artifact directory at ``path``; ArtifactError on any problem."""
    path = pathlib.Path(path)
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        raise ArtifactError(f"{path}: not a usable path ({type(exc).__name__})") from None
    if not is_dir:
        if path.exists():
            raise ArtifactError(f"{path}: not a directory; an artifact is a directory")
        raise ArtifactError(f"{path}: artifact directory does not exist")
    metadata = read_metadata(path)
    if metadata.feature_spec != FEATURE_SPEC:
        raise ArtifactError(
            f"{path}: artifact built for feature spec {metadata.feature_spec!r}, "
            f"this code computes {FEATURE_SPEC!r}; retrain the artifact"
        )
    if metadata.embedding_dim != EMBEDDING_DIM:
        raise ArtifactError(
            f"{path}: embedding dimension {metadata.embedding_dim}, this code has {EMBEDDING_DIM}"
        )
    if metadata.weak_model == metadata.strong_model:
        raise ArtifactError(f"{path}: weak and strong model are both {metadata.weak_model!r}")
    model_path = path / metadata.model_file
    if model_path.parent != path or not model_path.is_file():
        raise ArtifactError(f"{path}: model file {metadata.model_file!r} is missing")
    try:
        digest = sha256_of(model_path)
    except OSError as exc:  # replaced or removed while being read (a deploy mid-swap)
        raise ArtifactError(f"{model_path}: cannot be read: {exc.strerror}") from exc
    if digest != metadata.model_sha256:
        raise ArtifactError(f"{model_path}: checksum does not match metadata; file corrupt?")
    session = _open_session(model_path)
    scorer = DifficultyScorer(path, metadata, session)
    _smoke_test(scorer)
    return scorer


def _open_session(model_path: pathlib.Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One request is one tiny matrix product: threads would cost more in hand-off than they
    # save, and the server's event loop must not compete with an ONNX thread pool.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        raise ArtifactError(f"{model_path}: onnxruntime cannot load the model: {exc}") from exc
    _check_signature(model_path, session)
    return session


def _check_signature(model_path: pathlib.Path, session: ort.InferenceSession) -> None:
    inputs: list[Any] = session.get_inputs()
    outputs = {output.name for output in session.get_outputs()}
    if len(inputs) != 1 or inputs[0].name != ONNX_INPUT:
        names = [item.name for item in inputs]
        raise ArtifactError(f"{model_path}: expected one input {ONNX_INPUT!r}, found {names}")
    shape = inputs[0].shape
    if len(shape) != 2 or shape[1] != EMBEDDING_DIM:
        raise ArtifactError(
            f"{model_path}: input shape {shape}, this code feeds [N, {EMBEDDING_DIM}]"
        )
    if ONNX_OUTPUT not in outputs:
        raise ArtifactError(f"{model_path}: no {ONNX_OUTPUT!r} output (has {sorted(outputs)})")


def _smoke_test(scorer: DifficultyScorer) -> None:
    # A model that loads but cannot score (wrong output shape, NaN weights) must be refused
    # here, at load time, not on the first live request.
    try:
        value = scorer._session.run([ONNX_OUTPUT], {ONNX_INPUT: embed("ping").reshape(1, -1)})[0]
    except Exception as exc:  # onnxruntime raises its own exception types at run time
        raise ArtifactError(f"{scorer.path}: model fails to run: {exc}") from exc
    if value.shape != (1, 2) or not all(math.isfinite(float(v)) for v in value.ravel()):
        raise ArtifactError(f"{scorer.path}: model output {value!r} is not a probability pair")
