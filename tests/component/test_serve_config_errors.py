"""`llm-router serve` on a config it cannot start on: the config's error, one line, exit 2, and
nothing before it (no telemetry line, no budget warnings): the config is checked against the
environment and its files before anything is set up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from router_service.cli import main
from tests.support.configs import fast_raw

UNSET = "LLM_ROUTER_TEST_UNSET_KEY"
EXAMPLES = Path(__file__).parents[2] / "config" / "examples"


@pytest.fixture
def alone(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> Callable[[Path], str]:
    """`serve --config FILE`, asserted to exit 2 having logged nothing; what it wrote to stderr."""
    for name in (UNSET, "OPENAI_API_KEY", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.INFO)

    def serve(config: Path) -> str:
        assert main(["serve", "--config", str(config)]) == 2
        assert [record.getMessage() for record in caplog.records] == []
        return capsys.readouterr().err

    return serve


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        (
            {"apps": {"demo": {"key_sha256": None, "key_env": UNSET}}},
            f"apps.demo: environment variable {UNSET} is not set",
        ),
        (
            {"store": {"backend": "redis"}},
            "store.backend is redis but neither store.redis_url nor REDIS_URL is set",
        ),
        (
            {"server": {"tls": {"cert_file": "absent.crt", "key_file": "absent.key"}}},
            "cannot read TLS certificate file absent.crt: No such file or directory",
        ),
    ],
    ids=["app key", "redis url", "TLS file"],
)
def test_a_config_the_environment_cannot_serve_is_its_one_error(
    changes: dict[str, Any],
    error: str,
    alone: Callable[[Path], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(fast_raw(**changes)))
    assert alone(config) == f"llm-router: {error}\n"


def test_a_provider_key_missing_from_the_environment_is_the_one_error(
    alone: Callable[[Path], str],
) -> None:
    assert alone(EXAMPLES / "openai-compatible.yaml") == (
        "llm-router: providers.openai-compatible: environment variable OPENAI_API_KEY is not set\n"
    )
