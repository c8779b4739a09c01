"""What every part of the configuration shares: its error, its frozen base model, the tiers, and
reading a secret from the environment or a mounted file."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigError", "Frozen", "Tier", "read_secret"]


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the problem."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tier(StrEnum):
    CHEAP = "cheap"
    FRONTIER = "frontier"


def read_secret(env: str | None, file: Path | None, environ: Mapping[str, str]) -> str:
    """A secret from an environment variable or a mounted file; errors never show its value."""
    if env is not None:
        value = environ.get(env)
        if not value:
            raise ConfigError(f"environment variable {env} is not set")
        return value
    assert file is not None
    try:
        value = file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {file}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"key file {file} is empty")
    return value
