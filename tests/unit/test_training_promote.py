"""Promotion: the candidate replaces the current artifact only when it routes at least as well
on held-out rows, by an atomic symlink swap."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from classifier.scorer import DEFAULT_ARTIFACT
from router_service.cli import main
from training.errors import TrainingError
from training.promote import promote

WEAK, STRONG = "glm-5.2", "gpt-5.5"


@pytest.fixture
def held_out(tmp_path: Path) -> Path:
    """Outcome rows marked split=test, as `llm-router export` marks its held-out share."""
    rng = random.Random(7)
    rows = []
    for i in range(300):
        hard = rng.random() < 0.4
        prompt = (
            ("Prove the lemma and derive the bound step by step. " * rng.randint(1, 9))
            if hard
            else "Summarize: the meeting moved to Tuesday."
        )
        rows.append(
            {
                "id": f"r{i}",
                "source": "test",
                "split": "test",
                "task": "reasoning" if hard else "summarization",
                "messages": [{"role": "user", "content": f"{prompt} ({i})"}],
                "outcomes": {
                    WEAK: {
                        "score": float(rng.random() > (0.7 if hard else 0.1)),
                        "cost_usd": 0.0001,
                        "response": None,
                    },
                    STRONG: {
                        "score": float(rng.random() > 0.1),
                        "cost_usd": 0.002,
                        "response": None,
                    },
                },
            }
        )
    path = tmp_path / "outcomes.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def version_copy(target: Path, version: str, created_at: str | None = None) -> Path:
    shutil.copytree(DEFAULT_ARTIFACT, target)
    metadata = json.loads((target / "metadata.json").read_text())
    metadata |= {"version": version, "created_at": created_at or metadata["created_at"]}
    (target / "metadata.json").write_text(json.dumps(metadata))
    return target


def test_first_promotion_creates_the_link(tmp_path: Path, held_out: Path) -> None:
    candidate = version_copy(tmp_path / "v1", "v1")
    current = tmp_path / "current"
    result = promote(candidate, current, [held_out], weak=WEAK, strong=STRONG, echo=lambda _: None)
    assert result.promoted
    assert "no current artifact" in result.reason
    assert current.is_symlink()
    assert current.resolve() == candidate.resolve()


def test_promotes_only_when_at_least_as_good(tmp_path: Path, held_out: Path) -> None:
    v1 = version_copy(tmp_path / "v1", "v1")
    v2 = version_copy(tmp_path / "v2", "v2")
    current = tmp_path / "current"
    current.symlink_to("v1")
    kept = promote(
        v2, current, [held_out], weak=WEAK, strong=STRONG, min_gain=0.01, echo=lambda _: None
    )
    assert not kept.promoted
    assert kept.reason.startswith("kept v1")
    assert current.resolve() == v1.resolve()
    # The same routing quality (gain 0) is enough with the default min_gain.
    done = promote(v2, current, [held_out], weak=WEAK, strong=STRONG, echo=lambda _: None)
    assert done.promoted
    assert current.resolve() == v2.resolve()
    assert done.current is not None
    assert done.current["apgr"] == done.candidate["apgr"]


def test_a_directory_in_place_of_the_link_is_refused(tmp_path: Path, held_out: Path) -> None:
    candidate = version_copy(tmp_path / "v1", "v1")
    (tmp_path / "current").mkdir()
    with pytest.raises(TrainingError, match="not a symlink"):
        promote(candidate, tmp_path / "current", [held_out], weak=WEAK, strong=STRONG)


def test_too_few_rows_decide_nothing(tmp_path: Path, held_out: Path) -> None:
    candidate = version_copy(tmp_path / "v1", "v1")
    current = tmp_path / "current"
    result = promote(
        candidate, current, [held_out], weak=WEAK, strong=STRONG, min_rows=1000, echo=print
    )
    assert not result.promoted
    assert result.reason == (
        "promoted nothing, and there is no current artifact: only 300 held-out rows with "
        f"outcomes of both {WEAK} and {STRONG} (needs 1000)"
    )
    assert not current.exists()


def test_too_few_rows_keep_the_current_artifact(tmp_path: Path, held_out: Path) -> None:
    v1 = version_copy(tmp_path / "v1", "v1")
    candidate = version_copy(tmp_path / "v2", "v2")
    current = tmp_path / "current"
    current.symlink_to("v1")
    result = promote(
        candidate, current, [held_out], weak=WEAK, strong=STRONG, min_rows=1000, echo=print
    )
    assert not result.promoted
    assert result.reason.startswith("kept the current artifact: only 300 held-out rows")
    assert current.resolve() == v1.resolve()


def test_an_undefined_apgr_keeps_the_current_artifact(tmp_path: Path) -> None:
    # The two models score alike on every row: APGR is undefined, nothing can be compared.
    rows = [
        {
            "id": f"r{i}",
            "source": "test",
            "split": "test",
            "task": "t",
            "messages": [{"role": "user", "content": f"Question {i}?"}],
            "outcomes": {
                WEAK: {"score": 1.0, "cost_usd": 0.0001, "response": None},
                STRONG: {"score": 1.0, "cost_usd": 0.002, "response": None},
            },
        }
        for i in range(150)
    ]
    data = tmp_path / "same.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    version_copy(tmp_path / "v1", "v1")
    candidate = version_copy(tmp_path / "v2", "v2")
    current = tmp_path / "current"
    current.symlink_to("v1")
    result = promote(candidate, current, [data], weak=WEAK, strong=STRONG, echo=lambda _: None)
    assert not result.promoted
    assert "undefined" in result.reason
    assert current.resolve() == (tmp_path / "v1").resolve()


def test_a_promotion_links_the_artifact_it_replaces_as_previous(
    tmp_path: Path, held_out: Path
) -> None:
    v1 = version_copy(tmp_path / "v1", "v1")
    v2 = version_copy(tmp_path / "v2", "v2")
    current, previous = tmp_path / "current", tmp_path / "previous"
    for candidate, links in ((v1, ("v1", None)), (v2, ("v2", "v1")), (v2, ("v2", "v1"))):
        assert promote(
            candidate, current, [held_out], weak=WEAK, strong=STRONG, echo=lambda _: None
        ).promoted
        shown = (os.readlink(current), os.readlink(previous) if previous.is_symlink() else None)
        assert shown == links  # re-promoting the current artifact keeps the rollback target


def test_promote_prunes_the_artifact_directory_after_deciding(
    tmp_path: Path, held_out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for day in range(1, 7):
        version_copy(models / f"v{day}", f"v{day}", f"2026-11-0{day}T03:00:00+00:00")
    (models / "current").symlink_to("v1")
    (models / ".v7.q8w7e6r5").mkdir()  # a training run killed while it wrote its artifact
    os.utime(models / ".v7.q8w7e6r5", (0, 0))
    args = ["promote", "--candidate", str(models / "v6"), "--current", str(models / "current")]
    args += ["--data", str(held_out), "--weak", WEAK, "--strong", STRONG, "--keep", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "promoted v6" in out and "pruned 3 old artifacts" in out and "v2, v3, v4" in out
    # v6 is current, v1 previous (the rollback target), v5 the other of the 2 most recent.
    assert os.readlink(models / "current") == "v6" and os.readlink(models / "previous") == "v1"
    left = {p.name for p in models.iterdir() if not p.is_symlink()}
    assert left == {"v1", "v5", "v6", ".llm-router.lock", ".v7.q8w7e6r5"}  # staging: < 1 h


def test_keep_must_be_a_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "promote",
                "--candidate",
                "c",
                "--current",
                "l",
                "--data",
                "d",
                "--weak",
                WEAK,
                "--strong",
                STRONG,
                "--keep",
                "-1",
            ]
        )
    assert "'-1' is not a count" in capsys.readouterr().err
