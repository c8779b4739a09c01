"""The validated chat request the router works with, independent of the wire format.

`api.validation` builds a `ChatRequest` from a `RouteRequest` message; routing, providers and
caches only ever see these immutable objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = [
    "ROLES",
    "ChatMessage",
    "ChatRequest",
    "Hints",
    "TierPreference",
    "ToolCall",
    "ToolSpec",
]

ROLES = frozenset({"system", "user", "assistant", "tool"})


class TierPreference(IntEnum):
    """Mirrors router.v1.TierPreference; UNSPECIFIED is read as AUTO."""

    AUTO = 1
    CHEAP = 2
    FRONTIER = 3


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    tool_call_id: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    # The parsed JSON schema of the parameters.
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Hints:
    tier: TierPreference = TierPreference.AUTO
    force_model: str = ""
    money_movement: bool = False
    customer_escalation: bool = False
    response_cache: bool = False


@dataclass(frozen=True, slots=True)
class ChatRequest:
    request_id: str
    task: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    # 0: the task's default.
    max_output_tokens: int = 0
    temperature: float | None = None
    hints: Hints = Hints()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def role_contents(self) -> tuple[tuple[str, str], ...]:
        """(role, content) pairs: what the difficulty classifier reads."""
        return tuple((m.role, m.content) for m in self.messages)
