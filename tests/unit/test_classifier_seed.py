"""`llm-router classifier seed`: the first artifact of a fresh artifact volume, also when
several router pods seed the same shared volume at once or a promotion lands meanwhile."""

from __future__ import annotations

import filecmp
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from classifier.scorer import DEFAULT_ARTIFACT, load_scorer
from router_service.cli import main

VERSION = load_scorer(DEFAULT_ARTIFACT).version


def seed(directory: Path) -> int:
    return main(["classifier", "seed", str(directory)])


def assert_seeded(directory: Path) -> None:
    current = directory / "current"
    assert os.readlink(current) == VERSION  # relative: the volume mounts anywhere
    comparison = filecmp.dircmp(DEFAULT_ARTIFACT, current)
    assert not (comparison.left_only or comparison.right_only or comparison.diff_files)
    assert load_scorer(current).version == VERSION
    # Nothing half-copied is left beside it.
    assert sorted(p.name for p in directory.iterdir()) == sorted(["current", VERSION])


def test_a_fresh_directory_gets_the_shipped_artifact_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert seed(tmp_path) == 0
    assert_seeded(tmp_path)
    assert (tmp_path / VERSION).stat().st_mode & 0o777 == 0o755
    assert seed(tmp_path) == 0
    assert "exists; nothing to do" in capsys.readouterr().out


def test_pods_seeding_at_once_leave_one_complete_artifact(tmp_path: Path) -> None:
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(seed(tmp_path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [0] * 8
    assert_seeded(tmp_path)


def test_a_copy_renamed_in_first_by_another_pod_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copytree = shutil.copytree

    def another_pod_wins(source: Any, destination: Any, **options: Any) -> Any:
        # While this pod copies, another finishes its copy and renames it into place.
        if not (tmp_path / VERSION).exists():
            copytree(source, tmp_path / VERSION)
        return copytree(source, destination, **options)

    monkeypatch.setattr(shutil, "copytree", another_pod_wins)
    assert seed(tmp_path) == 0
    assert_seeded(tmp_path)


def test_a_link_made_meanwhile_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    promoted = tmp_path / "20261130T030000Z"
    shutil.copytree(DEFAULT_ARTIFACT, promoted)
    copytree = shutil.copytree

    def promotion_lands(source: Any, destination: Any, **options: Any) -> Any:
        # The retraining job (or a faster pod) links `current` while this seed copies.
        (tmp_path / "current").symlink_to(promoted.name)
        return copytree(source, destination, **options)

    monkeypatch.setattr(shutil, "copytree", promotion_lands)
    assert seed(tmp_path) == 0
    assert os.readlink(tmp_path / "current") == promoted.name
    assert "linked meanwhile" in capsys.readouterr().out


def test_a_directory_it_cannot_write_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_directory = tmp_path / "models"
    not_a_directory.write_text("")
    assert seed(not_a_directory) == 1
    err = capsys.readouterr().err
    assert f"cannot seed {not_a_directory}" in err
    assert f"uid {os.getuid()}" in err
