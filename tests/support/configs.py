"""Configs for tests: the embedded defaults made fast, with targeted changes."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from router_service.config import RouterConfig, layered

DEMO_KEY = "demo-key"
ADMIN_KEY = "demo-admin-key"


def embedded_raw() -> dict[str, Any]:
    text = resources.files("router_service.defaults").joinpath("embedded.yaml").read_text()
    raw: dict[str, Any] = yaml.safe_load(text)
    return raw


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in recursively (a None value deletes the key): the layering
    of config files."""
    return layered(base, changes)


def fast_raw(**changes: Any) -> dict[str, Any]:
    """The embedded defaults with simulated providers that answer at once, and deterministic:
    no classifier (task default tiers decide), no exploration or shadow grading, no call log
    (tests that want them turn them on)."""
    fast = {"ttft_ms": 0, "tokens_per_second": 100_000}
    raw = merge(
        embedded_raw(),
        {
            "server": {"listen": "127.0.0.1:0", "grace_period_s": 2},
            "providers": {"sim-openai": fast, "sim-anthropic": fast},
            "exploration": {"rate": 0.0, "shadow_rate": 0.0},
            "call_log": {"enabled": False},
            "classifier": {"enabled": False},
        },
    )
    return merge(raw, changes)


def fast_config(**changes: Any) -> RouterConfig:
    return RouterConfig.model_validate(fast_raw(**changes))
