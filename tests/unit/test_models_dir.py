"""The artifact directory as promotion keeps it: old artifacts and what killed runs left are
pruned, never an artifact a link names, also with several processes at it at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from classifier.artifact import METADATA_FILE
from training.errors import TrainingError
from training.models_dir import STAGING_MAX_AGE_S, Pruned, locked, promote_link, prune

ROOT = Path(__file__).resolve().parents[2]
EPOCH = datetime(2026, 1, 5, 3, tzinfo=UTC)


def artifact(directory: Path, name: str, day: int) -> Path:
    """An artifact directory made `day` days after EPOCH (by its metadata's created_at)."""
    path = directory / name
    path.mkdir()
    created = (EPOCH + timedelta(days=day)).isoformat(timespec="seconds")
    (path / METADATA_FILE).write_text(json.dumps({"version": name, "created_at": created}))
    (path / "model.onnx").write_bytes(b"onnx")
    return path


def link(directory: Path, name: str, target: str) -> None:
    (directory / name).symlink_to(target)


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_all_but_the_most_recent_and_the_linked_artifacts_are_pruned(tmp_path: Path) -> None:
    # Recency is the metadata's creation time, not the name: "zz-first" is the oldest.
    for day, name in enumerate(["zz-first", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "aa-last"]):
        artifact(tmp_path, name, day)
    link(tmp_path, "current", "v2")
    link(tmp_path, "previous", "zz-first")
    link(tmp_path, "stable", "v1")  # an operator's own pin
    (tmp_path / "notes").mkdir()  # not an artifact: no metadata.json
    (tmp_path / "notes" / "todo.txt").write_text("retrain on December's data")
    (tmp_path / "README").write_text("classifier artifacts")

    pruned = prune(tmp_path, keep=3, protect=[tmp_path / "v3"])  # v3: this run's candidate

    assert sorted(pruned.artifacts) == ["v4", "v5"]
    assert pruned.staging == () and pruned.errors == ()
    kept = {"zz-first", "v1", "v2", "v3", "v6", "v7", "aa-last"}
    assert names(tmp_path) == kept | {"current", "previous", "stable", "notes", "README"} | {
        ".llm-router.lock"
    }
    assert (tmp_path / "current" / METADATA_FILE).is_file()
    assert prune(tmp_path, keep=3, protect=[tmp_path / "v3"]) == Pruned()  # nothing more to do


def test_an_artifact_without_a_readable_creation_time_ranks_by_its_directorys_age(
    tmp_path: Path,
) -> None:
    for day, name in enumerate(["v1", "v2", "v3"]):
        artifact(tmp_path, name, day)
    for name, mtime in (("hand-made", EPOCH.timestamp() - 86400), ("hand-made-2", time.time())):
        (tmp_path / name).mkdir()
        (tmp_path / name / METADATA_FILE).write_text("{not json")
        os.utime(tmp_path / name, (mtime, mtime))
    link(tmp_path, "current", "v1")
    assert sorted(prune(tmp_path, keep=2).artifacts) == ["hand-made", "v2"]


def test_staging_left_by_killed_runs_is_removed_an_hour_after_its_last_change(
    tmp_path: Path,
) -> None:
    target = artifact(tmp_path, "v1", 0)
    link(tmp_path, "current", "v1")
    staging = {
        ".v2.k3j4h5g_": "dir",  # train's and the seed's tempfile.mkdtemp
        ".v1.old-812": "dir",  # train replacing an artifact
        ".current.4242": "link",  # promote's new link
        ".v0.pruned-77-0badc0de": "dir",  # a pruning killed mid-delete
    }
    # Not staging: other names, and a file (writers stage directories and links).
    others = {".snapshot": "dir", ".cache": "dir", ".v3.tmp": "dir", ".v4.2f9ak0cz": "file"}
    for name, kind in {**staging, **others}.items():
        if kind == "link":
            (tmp_path / name).symlink_to("v1")
        elif kind == "file":
            (tmp_path / name).write_text("someone's notes")
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.onnx").write_bytes(b"half")
    # A copy carries its source's mtime (copytree): its ctime still says it is being made.
    os.utime(tmp_path / ".v2.k3j4h5g_", (0, 0))
    assert prune(tmp_path, keep=5).staging == ()
    later = time.time() + STAGING_MAX_AGE_S + 60
    assert sorted(prune(tmp_path, keep=5, now=later).staging) == sorted(staging)
    assert names(tmp_path) == {"v1", "current", ".llm-router.lock", *others}
    assert target.is_dir()


def test_a_candidate_pruned_before_its_promotion_is_not_linked(tmp_path: Path) -> None:
    artifact(tmp_path, "v1", 0)
    link(tmp_path, "current", "v1")
    with pytest.raises(TrainingError, match="no longer a classifier artifact"):
        promote_link(tmp_path / "current", tmp_path / "v0")
    assert os.readlink(tmp_path / "current") == "v1"
    assert not (tmp_path / "previous").exists()


def test_pruning_waits_while_a_promotion_holds_the_directory(tmp_path: Path) -> None:
    for day, name in enumerate(["v1", "v2", "v3"]):
        artifact(tmp_path, name, day)
    link(tmp_path, "current", "v3")
    done: list[tuple[str, ...]] = []
    with locked(tmp_path):
        pruning = threading.Thread(target=lambda: done.append(prune(tmp_path, keep=1).artifacts))
        pruning.start()
        pruning.join(0.3)
        assert pruning.is_alive() and names(tmp_path) >= {"v1", "v2"}
    pruning.join(10)
    assert [sorted(artifacts) for artifacts in done] == [["v1", "v2"]]


WORKER = textwrap.dedent(
    """\
    import json, sys, time
    from pathlib import Path
    from training.errors import TrainingError
    from training.models_dir import promote_link, prune

    directory, role = Path(sys.argv[1]), sys.argv[2]
    while not (directory.parent / "go").exists():
        time.sleep(0.002)
    if role == "prune":
        pruned = prune(directory, keep=2)
        print(json.dumps({"deleted": list(pruned.artifacts), "errors": list(pruned.errors)}))
    else:
        try:
            promote_link(directory / "current", directory / role)
        except TrainingError:
            print(json.dumps({"rolled_back": False}))
        else:
            print(json.dumps({"rolled_back": True}))
    """
)


def test_several_processes_pruning_and_promoting_at_once_keep_every_link_whole(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for day in range(12):
        artifact(models, f"v{day:02}", day)
    link(models, "current", "v11")
    link(models, "previous", "v10")
    roles = ["prune"] * 4 + ["v03"]  # one rolls back to an old artifact meanwhile
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(models), role],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in roles
    ]
    (tmp_path / "go").touch()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        results.append(json.loads(out))
    deleted = [name for r in results[:-1] for name in r["deleted"]]
    assert all(r["errors"] == [] for r in results[:-1])
    assert len(deleted) == len(set(deleted))  # each artifact deleted by one process
    current = os.readlink(models / "current")
    assert (models / current / METADATA_FILE).is_file()
    assert (models / os.readlink(models / "previous") / METADATA_FILE).is_file()
    if results[-1]["rolled_back"]:
        assert (current, os.readlink(models / "previous")) == ("v03", "v11")
    else:
        assert "v03" in deleted and current == "v11"
    left = {p.name for p in models.iterdir() if not p.is_symlink() and p.name[0] != "."}
    assert left == {"v11", "v10", current, os.readlink(models / "previous")}
    assert not [p for p in models.iterdir() if ".pruned-" in p.name]
