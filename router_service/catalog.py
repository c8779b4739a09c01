"""The model catalog: each model's tier, prices, context window, capabilities and deployments."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from router_service.config import Deployment, ModelConfig, Tier
from router_service.cost import PriceTable

__all__ = ["REASONING", "Catalog", "CatalogModel"]


# A model that thinks before it answers (OpenAI's o-series and GPT-5, ...): it takes no
# sampling temperature but its default (the router leaves the caller's out of the request),
# and its output tokens include the reasoning (`max_completion_tokens` counts both).
REASONING = "reasoning"


@dataclass(frozen=True, slots=True)
class CatalogModel:
    name: str
    tier: Tier
    prices: PriceTable
    context_window: int
    max_output_tokens: int | None
    capabilities: frozenset[str]
    deployments: tuple[Deployment, ...]
    fallbacks: tuple[str, ...]

    def upstream_name(self, deployment: Deployment) -> str:
        return deployment.upstream_model or self.name


class Catalog:
    """Read-only view of the configured models, built once at start-up."""

    def __init__(self, models: Mapping[str, ModelConfig]) -> None:
        self._models = {
            name: CatalogModel(
                name=name,
                tier=cfg.tier,
                prices=PriceTable.from_config(cfg.prices),
                context_window=cfg.context_window,
                max_output_tokens=cfg.max_output_tokens,
                capabilities=frozenset(cfg.capabilities),
                deployments=cfg.deployments,
                fallbacks=cfg.fallbacks,
            )
            for name, cfg in models.items()
        }
        self._by_tier = {
            tier: tuple(m for m in self._models.values() if m.tier is tier) for tier in Tier
        }

    def __iter__(self) -> Iterator[CatalogModel]:
        return iter(self._models.values())

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def get(self, name: str) -> CatalogModel | None:
        return self._models.get(name)

    def __getitem__(self, name: str) -> CatalogModel:
        return self._models[name]

    def in_tier(self, tier: Tier) -> tuple[CatalogModel, ...]:
        return self._by_tier[tier]

    def largest_context(self, tier: Tier) -> int:
        return max(m.context_window for m in self._by_tier[tier])
