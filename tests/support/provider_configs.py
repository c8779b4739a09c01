"""Configs like the shipped examples, pointed at the fake provider, with fast timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from router_service.config import RouterConfig
from tests.support.configs import merge

EXAMPLES = Path(__file__).parent.parent.parent / "config" / "examples"
OPENAI_KEY = "sk-test-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-test-0123456789"
FAST = {"connect": 1.0, "first_token": 2.0, "idle": 2.0, "total": 20.0}


def example_raw(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return raw


def environ(fake_url: str) -> dict[str, str]:
    """What the examples read: base URLs of the fake provider and the test keys."""
    return {
        "OPENAI_BASE_URL": f"{fake_url}/v1",
        "OPENAI_API_KEY": OPENAI_KEY,
        "ANTHROPIC_BASE_URL": fake_url,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
    }


def mixed_raw(**changes: Any) -> dict[str, Any]:
    """config/examples/openai-compatible.yaml plus the Anthropic example's provider and
    claude-opus-4.8 (falling back to gpt-5.5), on a free port with fast timeouts."""
    anthropic = example_raw("anthropic")
    raw = merge(
        example_raw("openai-compatible"),
        {
            "server": {"listen": "127.0.0.1:0", "grace_period_s": 1},
            "providers": {
                "openai-compatible": {"timeouts": FAST},
                "anthropic": merge(anthropic["providers"]["anthropic"], {"timeouts": FAST}),
            },
            "models": {
                "claude-opus-4.8": merge(
                    anthropic["models"]["claude-opus-4.8"], {"fallbacks": ["gpt-5.5"]}
                )
            },
        },
    )
    return merge(raw, changes)


def mixed_config(**changes: Any) -> RouterConfig:
    return RouterConfig.model_validate(mixed_raw(**changes))
