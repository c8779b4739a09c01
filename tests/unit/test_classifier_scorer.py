"""The artifact loader and scorer: the shipped artifact works, anything broken is refused."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from classifier.artifact import METADATA_FILE, MODEL_FILE, sha256_of
from classifier.errors import ArtifactError
from classifier.features import FEATURE_SPEC
from classifier.scorer import DEFAULT_ARTIFACT, DifficultyScorer, load_scorer


@pytest.fixture(scope="module")
def default_scorer() -> DifficultyScorer:
    return load_scorer(DEFAULT_ARTIFACT)


def test_the_shipped_artifact_loads_and_describes_itself(default_scorer: DifficultyScorer) -> None:
    assert default_scorer.path == DEFAULT_ARTIFACT
    assert default_scorer.feature_spec == FEATURE_SPEC
    assert default_scorer.weak_model == "mistralai/mixtral-8x7b-chat"
    assert default_scorer.strong_model == "gpt-4-1106-preview"
    assert 0.0 < default_scorer.recommended_threshold < 1.0
    assert default_scorer.version


def test_the_shipped_artifact_scores_prompts(default_scorer: DifficultyScorer) -> None:
    easy = [("user", "Say hello.")]
    hard = [
        ("system", "You are a careful mathematician."),
        (
            "user",
            "Prove that there are infinitely many primes p such that p + 2 is also "
            "prime, or explain precisely why this is open, with references.",
        ),
    ]
    scores = [default_scorer.score(messages) for messages in (easy, hard, [])]
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert default_scorer.score(hard) == scores[1]


def test_scorer_attributes_are_read_only(default_scorer: DifficultyScorer) -> None:
    with pytest.raises(AttributeError):
        default_scorer.version = "other"  # type: ignore[misc]


def test_serving_never_imports_scikit_learn() -> None:
    """Nor any other training-only package, through the server, the CLI or the call log's
    readers (which share `training.dataset`'s row parser)."""
    code = (
        "import sys\n"
        "import router_service.server, router_service.cli\n"
        "import router_service.calllog.export, router_service.calllog.outcomes\n"
        "from classifier.scorer import DEFAULT_ARTIFACT, load_scorer\n"
        "load_scorer(DEFAULT_ARTIFACT).score([('user', 'hi')])\n"
        "heavy = ('sklearn', 'skl2onnx', 'scipy', 'matplotlib', 'pandas', 'onnx')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in heavy], sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def broken_copy(tmp_path: pathlib.Path, change: Callable[[pathlib.Path], None]) -> pathlib.Path:
    target = tmp_path / "artifact"
    shutil.copytree(DEFAULT_ARTIFACT, target)
    change(target)
    return target


def edit_metadata(**fields: Any) -> Callable[[pathlib.Path], None]:
    def change(directory: pathlib.Path) -> None:
        path = directory / METADATA_FILE
        metadata = json.loads(path.read_text())
        metadata.update(fields)
        path.write_text(json.dumps(metadata))

    return change


def replace_model(content: bytes, *, fix_checksum: bool) -> Callable[[pathlib.Path], None]:
    def change(directory: pathlib.Path) -> None:
        (directory / MODEL_FILE).write_bytes(content)
        if fix_checksum:
            edit_metadata(model_sha256=sha256_of(directory / MODEL_FILE))(directory)

    return change


def remove(name: str) -> Callable[[pathlib.Path], None]:
    return lambda directory: (directory / name).unlink()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (edit_metadata(feature_spec="charhash-v0:other"), "feature spec"),
        (edit_metadata(format_version=2), "format version"),
        (edit_metadata(embedding_dim=3), "embedding dimension"),
        (edit_metadata(weak_model="gpt-4-1106-preview"), "both"),
        (edit_metadata(strong_model=""), "invalid metadata"),
        (edit_metadata(recommended_threshold=1.5), "invalid metadata"),
        (edit_metadata(surprise="field"), "invalid metadata"),
        (edit_metadata(model_file="../elsewhere.onnx"), "missing"),
        (remove(METADATA_FILE), "no metadata.json"),
        (remove(MODEL_FILE), "missing"),
        (lambda d: (d / METADATA_FILE).write_text("{not json"), "unreadable"),
        (lambda d: (d / METADATA_FILE).write_text("[]"), "JSON object"),
        (replace_model(b"truncated", fix_checksum=False), "checksum"),
        (replace_model(b"not an onnx model", fix_checksum=True), "cannot load"),
    ],
)
def test_broken_or_mismatched_artifacts_are_refused(
    tmp_path: pathlib.Path, change: Callable[[pathlib.Path], None], message: str
) -> None:
    with pytest.raises(ArtifactError, match=message):
        load_scorer(broken_copy(tmp_path, change))


def test_a_missing_directory_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_scorer(tmp_path / "nothing-here")
    with pytest.raises(ArtifactError, match="not a usable path"):
        load_scorer(tmp_path / ("x" * 300))  # a name too long for the file system
    with pytest.raises(ArtifactError, match="does not exist"):
        load_scorer(tmp_path / "nul\x00byte")
    (tmp_path / "metadata.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"metadata\.json: not a directory; an artifact is a"):
        load_scorer(tmp_path / "metadata.json")


def test_a_metadata_error_names_the_field_not_its_value(tmp_path: pathlib.Path) -> None:
    secret = "TOP-SECRET-CONTENT-abc"
    with pytest.raises(ArtifactError) as caught:
        load_scorer(broken_copy(tmp_path, edit_metadata(weak_model=["x"], surprise=secret)))
    message = str(caught.value)
    assert "invalid metadata" in message and "weak_model" in message and "surprise" in message
    assert secret not in message
