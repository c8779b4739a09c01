"""The directory the routers load classifier artifacts from (`/models`), as promotion keeps it:
the `current` link, the `previous` one kept for rolling back, and pruning of the rest.

Layout: one directory per artifact (holding its metadata.json), the symlink `current` that the
routers load and watch, `previous`, the artifact `current` named before the last promotion
that changed it, and hidden staging entries. Every writer stages beside its target and renames
into place, so that each change is atomic on the one filesystem:

    train     .<name>.XXXXXXXX (tempfile.mkdtemp) -> <name>; an <name> it replaces goes
              through .<name>.old-<pid>
    seed      .<version>.XXXXXXXX -> <version>
    promote   .current.<pid>, .previous.<pid> (symlinks) -> current, previous
    prune     <artifact> -> .<artifact>.pruned-<pid>-<hex>, then deleted

A process killed mid-way leaves its staging entry behind; pruning deletes those an hour after
their last change (no writer stages for that long), and old artifacts: every artifact
directory but the `keep` most recent (by the `created_at` of their metadata) and those a link
in the directory names (`current`, `previous`, or a pin of an operator's own).

Several promotions and prunings may run at once (a manual one beside the CronJob's): the link
changes and pruning hold an exclusive lock on `.llm-router.lock` in the directory, so a pruning
never deletes an artifact a promotion is about to link, and a promotion links only an artifact
still there. The lock is `flock`, which the Linux NFS client turns into a lock the server shares
between clients (unless the volume is mounted with `nolock` or `local_lock`). Each deletion also
first renames its directory to a name of its own, so that only one process ever deletes it,
even where locks stay on one node, and no half-deleted artifact is seen under its name.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from classifier.artifact import METADATA_FILE
from training.errors import TrainingError

__all__ = [
    "PREVIOUS",
    "STAGING_MAX_AGE_S",
    "Pruned",
    "locked",
    "promote_link",
    "prune",
]

# The link to the artifact `current` named before the last promotion, beside `current`.
PREVIOUS = "previous"
# Staging entries untouched this long belong to a process that is gone.
STAGING_MAX_AGE_S = 3600.0
LOCK_FILE = ".llm-router.lock"
_LOCK_TIMEOUT_S = 60.0
# The hidden names writers stage under (the module docstring); nothing else hidden is touched.
_STAGING = re.compile(r"^\..+\.(?:[a-z0-9_]{8}|old-\d+|\d+|pruned-\d+-[0-9a-f]{8})$")


@contextmanager
def locked(directory: Path, *, timeout_s: float = _LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the directory's lock (exclusive, shared by every process that opens it);
    TrainingError after `timeout_s` of waiting."""
    path = directory / LOCK_FILE
    # Open for writing: NFS takes an exclusive lock only on a file open for writing.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TrainingError(
                        f"{path} is still held by another promotion or pruning after "
                        f"{timeout_s:.0f} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _point(link: Path, target: Path) -> None:
    """Make `link` point at `target`, atomically (a new link renamed over the old one)."""
    relative = os.path.relpath(target.resolve(), link.parent.resolve())
    staging = link.with_name(f".{link.name}.{os.getpid()}")
    staging.unlink(missing_ok=True)
    staging.symlink_to(relative)
    staging.replace(link)


def _is_artifact(path: Path) -> bool:
    return path.is_dir() and (path / METADATA_FILE).is_file()


def promote_link(current: Path, candidate: Path) -> None:
    """Point `current` at `candidate`, and `previous` beside it at what `current` named
    before (when that was another artifact, still there), under the directory's lock.
    TrainingError when the candidate is no longer an artifact (pruned meanwhile)."""
    with locked(current.parent):
        if not _is_artifact(candidate):
            raise TrainingError(f"{candidate} is no longer a classifier artifact: not promoted")
        before = current.resolve() if current.is_symlink() else None
        if before is not None and before != candidate.resolve() and _is_artifact(before):
            _point(current.with_name(PREVIOUS), before)
        _point(current, candidate)


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a pruning did: the names of the entries it deleted, and what it could not delete."""

    artifacts: tuple[str, ...] = ()
    staging: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def prune(
    directory: Path,
    *,
    keep: int,
    protect: Iterable[Path] = (),
    now: float | None = None,
) -> Pruned:
    """Delete from `directory` the artifact directories that are neither among the `keep` most
    recent nor named by a link there (`current`, `previous`, ...) nor in `protect`, and the
    staging entries left for over an hour, under the directory's lock."""
    if keep < 0:
        raise ValueError(f"keep must be 0 or more, not {keep}")
    now = time.time() if now is None else now
    with locked(directory):
        entries = list(directory.iterdir())
        named = {path.resolve() for path in protect}
        named.update(entry.resolve() for entry in entries if entry.is_symlink())
        artifacts = [
            e
            for e in entries
            if not e.name.startswith(".") and not e.is_symlink() and _is_artifact(e)
        ]
        artifacts.sort(key=_created, reverse=True)
        old = [e for e in artifacts[keep:] if e.resolve() not in named]
        stale = [
            e
            for e in entries
            if _STAGING.match(e.name)
            and (e.is_symlink() or e.is_dir())
            and _idle_s(e, now) > STAGING_MAX_AGE_S
        ]
        deleted: dict[str, list[str]] = {"artifacts": [], "staging": []}
        errors = []
        for kind, doomed in (("artifacts", old), ("staging", stale)):
            for entry in doomed:
                try:
                    if _delete(entry):
                        deleted[kind].append(entry.name)
                except OSError as exc:
                    errors.append(f"{entry.name}: {exc.strerror or exc}")
    return Pruned(tuple(deleted["artifacts"]), tuple(deleted["staging"]), tuple(errors))


def _created(artifact: Path) -> float:
    """When the artifact was made: its metadata's `created_at`, else its directory's mtime."""
    try:
        created = json.loads((artifact / METADATA_FILE).read_text(encoding="utf-8"))["created_at"]
        return datetime.fromisoformat(created).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return artifact.lstat().st_mtime
        except FileNotFoundError:
            return 0.0  # gone meanwhile: the deletion will find nothing to do


def _idle_s(entry: Path, now: float) -> float:
    """Seconds since `entry` last changed (0 when it is gone: renamed into place meanwhile).
    The ctime too: a copy (the seed's copytree) carries its source's mtime, but its ctime is
    when it was made."""
    try:
        stat = entry.lstat()
    except FileNotFoundError:
        return 0.0
    return now - max(stat.st_mtime, stat.st_ctime)


def _delete(entry: Path) -> bool:
    """Delete `entry` unless another process got there first (False then)."""
    try:
        if entry.is_symlink():
            entry.unlink()
            return True
        # Renamed first: one process wins the name, and the artifact leaves its name whole.
        claimed = entry.with_name(f".{entry.name}.pruned-{os.getpid()}-{secrets.token_hex(4)}")
        entry.rename(claimed)
    except FileNotFoundError:
        return False
    shutil.rmtree(claimed)
    return True
