"""What every provider adapter implements, and the events a provider stream yields.

An adapter turns a `ProviderRequest` into one upstream call and yields `TextDelta` and
`ToolCallDelta` events as the answer arrives, then exactly one `StreamEnd` with the normalized
usage. An adapter that learns part of the usage before the end (Anthropic reports the input
side when the message starts) yields it as a `UsageReport`, so a stream that breaks or is
cancelled half-way is still billed from the provider's own counts.

Events come in batches (`ProviderEvents`, never empty): those one network read completed,
together, so that a burst of tokens that arrived at once passes each layer above (fallback,
call, gRPC) once rather than once per token.

Failures are raised as `errors.ProviderError` subclasses, translated from transport and HTTP
errors inside the adapter package (`providers.errors`), never further out.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from router_service.chat import ChatMessage, ToolSpec
from router_service.cost import Usage

__all__ = [
    "Provider",
    "ProviderEvent",
    "ProviderEvents",
    "ProviderRequest",
    "StreamEnd",
    "TextDelta",
    "ToolCallDelta",
    "UsageReport",
]


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    # The model's name at this provider.
    model: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...]
    max_output_tokens: int
    temperature: float | None
    # Estimated prompt tokens; adapters that must decide whether a prefix is worth a cache
    # marker use it instead of counting again.
    prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str
    name: str
    arguments_fragment: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    finish_reason: str
    usage: Usage
    # The model that answered, as the provider names it.
    model: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    """The usage the provider has reported so far; not part of the answer. The latest one is
    billed when the stream ends without a `StreamEnd`."""

    usage: Usage


ProviderEvent = TextDelta | ToolCallDelta | StreamEnd | UsageReport
# The events of one network read, in order; never empty.
ProviderEvents = Sequence[ProviderEvent]


class Provider(Protocol):
    """One upstream API endpoint (a provider deployment) the router can call."""

    @property
    def name(self) -> str: ...

    def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvents, None]:
        """Call the provider and yield the answer as it arrives, batch by batch, ending with
        `StreamEnd`."""
        ...

    async def aclose(self) -> None:
        """Release connections and background work."""
        ...
