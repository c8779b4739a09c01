"""What each routed call costs, for the cost side of the evaluation.

Recorded ``cost_usd`` is used where the data has it. Where it is null (DC-Router, or call logs
without usage) the cost is estimated from catalog prices: a blended USD price per million
tokens per model, times the tokens of the prompt and the recorded response (about four
characters a token; a fixed answer length when no response was kept). The default prices are
the illustrative tiers of SPEC.md's example catalog: open-weight models about $0.95-1.40 per
million tokens (we take $1.20), frontier models $5 and up (we take $5.00). Override them per
model on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from classifier.features import prompt_text
from training.dataset import OutcomeRow

__all__ = [
    "DEFAULT_CHEAP_PRICE_PER_MTOK",
    "DEFAULT_FRONTIER_PRICE_PER_MTOK",
    "PairCosts",
    "estimate_tokens",
    "pair_costs",
]

DEFAULT_CHEAP_PRICE_PER_MTOK = 1.20
DEFAULT_FRONTIER_PRICE_PER_MTOK = 5.00
CHARS_PER_TOKEN = 4
DEFAULT_ANSWER_TOKENS = 256


@dataclass(frozen=True, slots=True)
class PairCosts:
    weak: npt.NDArray[np.float64]
    strong: npt.NDArray[np.float64]
    # "recorded", "catalog" or "recorded+catalog": where the numbers came from.
    basis: str


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token, at least one)."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def pair_costs(
    rows: Sequence[OutcomeRow],
    weak: str,
    strong: str,
    prices_per_mtok: Mapping[str, float] | None = None,
) -> PairCosts:
    """Per-row cost of the weak and the strong call; every row must have both outcomes."""
    prices = {
        weak: DEFAULT_CHEAP_PRICE_PER_MTOK,
        strong: DEFAULT_FRONTIER_PRICE_PER_MTOK,
        **(prices_per_mtok or {}),
    }
    bases: set[str] = set()
    columns = []
    for model in (weak, strong):
        costs = []
        for row in rows:
            outcome = row.outcomes[model]
            if outcome.cost_usd is not None:
                bases.add("recorded")
                costs.append(outcome.cost_usd)
                continue
            bases.add("catalog")
            prompt_tokens = estimate_tokens(prompt_text(row.messages))
            answer_tokens = (
                estimate_tokens(outcome.response)
                if outcome.response is not None
                else DEFAULT_ANSWER_TOKENS
            )
            costs.append((prompt_tokens + answer_tokens) * prices[model] / 1e6)
        columns.append(np.asarray(costs, dtype=np.float64))
    return PairCosts(weak=columns[0], strong=columns[1], basis="+".join(sorted(bases)))
