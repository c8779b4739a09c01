"""What every part of the configuration shares: its error, its frozen base model, the tiers, and
reading a secret from the environment or a mounted file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

__all__ = ["ConfigError", "EnvName", "Frozen", "Tier", "read_secret"]


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the problem."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tier(StrEnum):
    CHEAP = "cheap"
    FRONTIER = "frontier"


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _env_name(name: str) -> str:
    # A value that is no variable name is most likely the secret itself, pasted where its
    # variable's name belongs: refused without repeating it, since errors are logged.
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(
            "must name an environment variable (letters, digits and _, not starting with a "
            "digit), not hold the secret itself"
        )
    return name


# The name of an environment variable, e.g. `api_key_env: OPENAI_API_KEY`.
EnvName = Annotated[str, AfterValidator(_env_name)]


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
