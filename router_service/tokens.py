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

__all__ = ["PromptSize", "TextSize", "estimate_tokens", "measure_prompt", "tokens_for_length"]

# Chat formats wrap each message in a few special tokens (role markers, separators).
_PER_MESSAGE_OVERHEAD = 4
_PER_REQUEST_OVERHEAD = 3
# Providers wrap tool definitions in a system prompt of their own, billed as input (Anthropic's
# is about 350 tokens): the bound allows for it whenever a request carries tools.
_TOOLS_OVERHEAD_TOKENS = 1024


def tokens_for_length(chars: int, extra_bytes: int = 0) -> int:
    """About four characters per token, as for English under common BPE vocabularies, and
    about one more per non-ASCII character (CJK text runs near one token per character):
    `extra_bytes` is the UTF-8 length minus the character count, two per CJK character."""
    return (chars + 3) // 4 + (extra_bytes + 1) // 2


def estimate_tokens(text: str) -> int:
    extra = 0 if text.isascii() else len(text.encode()) - len(text)
    return tokens_for_length(len(text), extra)


class TextSize:
    """Characters and non-ASCII bytes of text as it streams, for estimating its tokens."""

    __slots__ = ("chars", "extra_bytes")

    def __init__(self) -> None:
        self.chars = 0
        self.extra_bytes = 0

    def add(self, text: str) -> None:
        self.chars += len(text)
        if not text.isascii():
            self.extra_bytes += len(text.encode()) - len(text)

    @property
    def tokens(self) -> int:
        return tokens_for_length(self.chars, self.extra_bytes) if self.chars else 0


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
        pieces.append(message.role)
        pieces.append(message.content)
        pieces.append(message.tool_call_id)
        for call in message.tool_calls:
            pieces.append(call.id)
            pieces.append(call.name)
            pieces.append(call.arguments_json)
    overhead = _PER_REQUEST_OVERHEAD + _PER_MESSAGE_OVERHEAD * len(request.messages)
    estimate = overhead + sum(estimate_tokens(p) for p in pieces)
    # Every string the request sends, byte for byte (each token covers at least one byte),
    # plus what providers add around tools.
    bound = overhead + sum(len(p.encode()) for p in pieces)
    if request.tools:
        bound += _TOOLS_OVERHEAD_TOKENS
    return PromptSize(estimate=estimate, bound=bound)
