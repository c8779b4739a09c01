"""Token usage and what it costs, in integer micro-dollars.

Usage is normalized the OpenTelemetry GenAI way: `input_tokens` counts every prompt token,
including those read from and written to the provider's prompt cache. Each provider adapter
produces a normalized `Usage`; nothing downstream needs to know a provider's reporting style.

Prices are kept as integer micro-dollars per million tokens, so a call's cost is one integer sum
of products with a single rounding at the end: exact, and the same on every replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from router_service.config import Prices

__all__ = ["MICRO", "PriceTable", "Usage", "micro_to_usd", "usd_to_micro"]

MICRO = 1_000_000


def usd_to_micro(usd: Decimal | float) -> int:
    """USD to micro-dollars, rounded half up (Decimal for exactness with config values)."""
    return int((Decimal(str(usd)) * MICRO).to_integral_value(rounding="ROUND_HALF_UP"))


def micro_to_usd(micro: int) -> float:
    return micro / MICRO


@dataclass(frozen=True, slots=True)
class Usage:
    """Normalized token counts of one call."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        return max(0, self.input_tokens - self.cached_input_tokens - self.cache_write_tokens)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.output_tokens + other.output_tokens,
        )


@dataclass(frozen=True, slots=True)
class PriceTable:
    """A model's prices in micro-dollars per million tokens (equivalently, pico-dollars per
    token)."""

    input: int
    cached_input: int
    cache_write: int
    output: int

    @classmethod
    def from_config(cls, prices: Prices) -> PriceTable:
        return cls(
            input=usd_to_micro(prices.input),
            cached_input=usd_to_micro(prices.cached_input),
            cache_write=usd_to_micro(prices.cache_write),
            output=usd_to_micro(prices.output),
        )

    def cost_micro_usd(self, usage: Usage) -> int:
        """What `usage` costs, rounded half up to a whole micro-dollar."""
        total = (
            usage.uncached_input_tokens * self.input
            + usage.cached_input_tokens * self.cached_input
            + usage.cache_write_tokens * self.cache_write
            + usage.output_tokens * self.output
        )
        return (total + MICRO // 2) // MICRO

    def worst_case_micro_usd(self, input_tokens: int, max_output_tokens: int) -> int:
        """The most a call can cost: every input token at the dearest input price (uncached,
        cached or cache write), and every allowed output token; rounded up."""
        dearest_input = max(self.input, self.cached_input, self.cache_write)
        total = input_tokens * dearest_input + max_output_tokens * self.output
        return -(-total // MICRO)
