"""Builds provider adapters from config: one factory per `kind`, chosen from a table."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import httpx

from router_service.config import (
    AnthropicProviderConfig,
    ConfigError,
    OpenAIProviderConfig,
    ProviderConfig,
    SimulatedProviderConfig,
)
from router_service.providers.anthropic import AnthropicProvider
from router_service.providers.base import Provider
from router_service.providers.openai_compat import OpenAICompatProvider
from router_service.providers.simulated import SimulatedProvider

__all__ = ["build_providers"]

Factory = Callable[[str, ProviderConfig, httpx.AsyncClient, Mapping[str, str]], Provider]


def _simulated(
    name: str, config: ProviderConfig, _client: httpx.AsyncClient, _environ: Mapping[str, str]
) -> Provider:
    assert isinstance(config, SimulatedProviderConfig)
    return SimulatedProvider(name, config)


def _openai(
    name: str, config: ProviderConfig, client: httpx.AsyncClient, environ: Mapping[str, str]
) -> Provider:
    assert isinstance(config, OpenAIProviderConfig)
    return OpenAICompatProvider(name, config, client, environ)


def _anthropic(
    name: str, config: ProviderConfig, client: httpx.AsyncClient, environ: Mapping[str, str]
) -> Provider:
    assert isinstance(config, AnthropicProviderConfig)
    return AnthropicProvider(name, config, client, environ)


_FACTORIES: Mapping[str, Factory] = {
    "simulated": _simulated,
    "openai": _openai,
    "anthropic": _anthropic,
}


def build_providers(
    configs: Mapping[str, ProviderConfig],
    client: httpx.AsyncClient,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Provider]:
    """One adapter per configured provider, all sharing `client`'s connection pool. API keys
    and base URLs are resolved here, once, from `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    providers: dict[str, Provider] = {}
    for name, config in configs.items():
        try:
            providers[name] = _FACTORIES[config.kind](name, config, client, env)
        except ConfigError as exc:
            raise ConfigError(f"providers.{name}: {exc}") from None
    return providers
