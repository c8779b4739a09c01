"""How much of each task's traffic explores the other tier or is shadow-graded there.

The policy (`policy.decide`) applies an exploration rate to a uniform draw and records the
propensity; this module supplies both, from the `exploration` config section and per-task
overrides (`tasks.<name>.exploration_rate` / `shadow_rate`, also per app).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from router_service.config import ExplorationConfig, TaskConfig

__all__ = ["Exploration"]


class Exploration:
    def __init__(
        self, config: ExplorationConfig, *, draw: Callable[[], float] = random.random
    ) -> None:
        self._config = config
        self.draw = draw

    def exploration_rate(self, task: TaskConfig) -> float:
        rate = task.exploration_rate
        return self._config.rate if rate is None else rate

    def shadow_rate(self, task: TaskConfig) -> float:
        rate = task.shadow_rate
        return self._config.shadow_rate if rate is None else rate
