"""Token counts before a provider has counted them.

The router needs two numbers before the call: a realistic estimate (for context-window checks)
and an upper bound (for budget reservations, which must never be smaller than what the call can
cost). No tokenizer is shipped: providers use different ones, and byte-level BPE gives a bound
for free, since every token covers at least one byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from router_service.chat import ChatRequest

__all__ = ["PromptSize", "estimate_tokens", "measure_prompt", "tokens_for_length"]

# Chat formats wrap each message in a few special tokens (role markers, separators).
_PER_MESSAGE_OVERHEAD = 4
_PER_REQUEST_OVERHEAD = 3


def tokens_for_length(chars: int) -> int:
    """About four characters per token, as for English under common BPE vocabularies."""
    return (chars + 3) // 4


def estimate_tokens(text: str) -> int:
    return tokens_for_length(len(text))


@dataclass(frozen=True, slots=True)
class PromptSize:
    # What the prompt most likely counts as.
    estimate: int
    # What no byte-level tokenizer can exceed.
    bound: int


def measure_prompt(request: ChatRequest) -> PromptSize:
    pieces: list[str] = []
    if request.tools:
        pieces.append(
            json.dumps(
                [
                    {"name": t.name, "description": t.description, "parameters": t.parameters}
                    for t in request.tools
                ]
            )
        )
    for message in request.messages:
        pieces.append(message.content)
        for call in message.tool_calls:
            pieces.append(call.name)
            pieces.append(call.arguments_json)
    overhead = _PER_REQUEST_OVERHEAD + _PER_MESSAGE_OVERHEAD * len(request.messages)
    estimate = overhead + sum(estimate_tokens(p) for p in pieces)
    bound = overhead + sum(len(p.encode()) for p in pieces)
    return PromptSize(estimate=estimate, bound=bound)
