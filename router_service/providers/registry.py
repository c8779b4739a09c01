"""Builds provider adapters from config: one factory per `kind`, chosen from a table."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from router_service.config import ProviderConfig, SimulatedProviderConfig
from router_service.providers.base import Provider
from router_service.providers.simulated import SimulatedProvider

__all__ = ["build_providers"]

Factory = Callable[[str, ProviderConfig, httpx.AsyncClient], Provider]


def _simulated(name: str, config: ProviderConfig, _client: httpx.AsyncClient) -> Provider:
    assert isinstance(config, SimulatedProviderConfig)
    return SimulatedProvider(name, config)


_FACTORIES: Mapping[str, Factory] = {
    "simulated": _simulated,
}


def build_providers(
    configs: Mapping[str, ProviderConfig], client: httpx.AsyncClient
) -> dict[str, Provider]:
    """One adapter per configured provider, all sharing `client`'s connection pool."""
    return {name: _FACTORIES[config.kind](name, config, client) for name, config in configs.items()}
