"""The difficulty classifier as the service runs it: loaded once, swapped without a restart.

`ClassifierRuntime` holds the active `DifficultyScorer` and is the pipeline's `DifficultySource`.
A new artifact arrives either through `Admin.ReloadClassifier` or by appearing in the watched
artifact directory (the retraining job writes a new version and swaps a symlink). Loading runs
in a worker thread so the event loop keeps serving; an artifact that fails its checks is refused
and the one already loaded keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path

from classifier.errors import ArtifactError
from classifier.scorer import DEFAULT_ARTIFACT, DifficultyScorer, load_scorer
from router_service.config import ClassifierConfig
from router_service.errors import ArtifactRejected
from router_service.policy import Classification

__all__ = ["ActiveClassifier", "ClassifierRuntime"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActiveClassifier:
    scorer: DifficultyScorer
    # Unix time it was loaded.
    loaded_at: float


def _fingerprint(path: Path) -> tuple[object, ...]:
    """Changes whenever the artifact at `path` (or the target of a symlink there) changes."""
    try:
        resolved = path.resolve(strict=True)
        files = sorted(p for p in resolved.iterdir() if p.is_file())
        return (resolved, *((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files))
    except (OSError, ValueError):
        return ("missing",)


class ClassifierRuntime:
    """The active classifier; thread-safe to read, swapped atomically."""

    def __init__(
        self, config: ClassifierConfig, *, required_thresholds: Set[str] = frozenset()
    ) -> None:
        self._config = config
        self._configured = config.artifact or DEFAULT_ARTIFACT
        # The artifact loaded now, and watched: the configured one until a reload names another.
        self.path = self._configured
        # Operating points the task classes name: an artifact must define them all.
        self._required = frozenset(required_thresholds)
        self._active: ActiveClassifier | None = None
        self._fingerprint: tuple[object, ...] = ()
        self._lock = asyncio.Lock()

    def load_initial(self) -> None:
        """Load the configured artifact at start-up; a bad one stops the start."""
        fingerprint = _fingerprint(self.path)
        try:
            scorer = self._load(self.path)
        except ArtifactError as exc:
            raise ArtifactRejected(f"classifier artifact {self.path}: {exc}") from None
        self._active = ActiveClassifier(scorer, time.time())
        self._fingerprint = fingerprint
        log.info("classifier %s loaded from %s", scorer.version, self.path)

    def _load(self, path: Path) -> DifficultyScorer:
        scorer = load_scorer(path)
        pair = self._config.model_pair
        if pair is not None and (scorer.weak_model, scorer.strong_model) != pair:
            raise ArtifactError(
                f"the artifact is trained for {scorer.weak_model} -> {scorer.strong_model}; "
                f"classifier.model_pair asks for {pair[0]} -> {pair[1]}"
            )
        missing = self._required - scorer.metadata.thresholds.keys()
        if missing:
            raise ArtifactError(
                f"the task classes use operating points {sorted(missing)} that the artifact "
                f"does not define (it has {sorted(scorer.metadata.thresholds)})"
            )
        return scorer

    @property
    def active(self) -> ActiveClassifier | None:
        return self._active

    def classify(self, messages: Sequence[tuple[str, str]]) -> Classification | None:
        active = self._active
        if active is None:
            return None
        scorer = active.scorer
        return Classification(
            score=scorer.score(messages),
            version=scorer.version,
            recommended_threshold=scorer.recommended_threshold,
            thresholds=scorer.metadata.thresholds,
        )

    async def reload(self, path: Path | None = None) -> ActiveClassifier:
        """Load the artifact at `path` (default: the configured one) and make it active; from
        then on the watcher follows `path`. A `path` outside `classifier.reload_root`, when
        that is set, is refused."""
        root = self._config.reload_root
        if path is not None and root is not None and not _inside(path, root):
            raise ArtifactRejected(
                f"classifier artifact {path} refused: it is not inside classifier.reload_root "
                f"({root}); the previous one keeps serving"
            )
        async with self._lock:
            target = path or self._configured
            fingerprint = _fingerprint(target)
            try:
                scorer = await asyncio.to_thread(self._load, target)
            except ArtifactError as exc:
                log.error("classifier artifact %s refused: %s", target, exc)
                raise ArtifactRejected(
                    f"classifier artifact {target} refused ({exc}); the previous one keeps serving"
                ) from None
            self._active = ActiveClassifier(scorer, time.time())
            self.path, self._fingerprint = target, fingerprint
            log.info("classifier %s loaded from %s", scorer.version, target)
            return self._active

    async def watch(self) -> None:
        """Poll the artifact now loaded (the configured one, or the one a reload named) and
        load what changes there, until cancelled. Nothing but cancellation stops it."""
        while True:
            await asyncio.sleep(self._config.watch_interval_s)
            path = self.path
            if _fingerprint(path) == self._fingerprint:
                continue
            try:
                await self.reload(path)
            except ArtifactRejected:
                # Remember the bad version so it is not retried every poll; a fixed one has
                # another fingerprint.
                self._fingerprint = _fingerprint(path)
            except Exception:
                # Files swapped under the loader (a retraining job mid-write), or anything else
                # unforeseen: the artifact loaded before keeps serving; look again next poll.
                log.exception("classifier artifact %s could not be checked", path)


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, symlinks resolved, is `root` or below it."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop, an unreadable directory
        return False
