"""The response cache: whole answers to deterministic requests, served again at no cost.

A request is eligible when its temperature is exactly 0 (an unset temperature means the
provider's default, which samples) and its app (`response_cache: true`) or the request itself
(`hints.response_cache`) opts in. The key hashes everything that shapes the answer (task,
messages, canonical tools, max output tokens, tier hint, forced model, sensitivity flags) and
lives under the app's own keys, so no app can ever be served another app's answer. Only complete
answers are stored (never a cancelled or broken stream), up to 1 MiB, for the configured TTL.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from router_service.auth import App
from router_service.chat import ChatRequest
from router_service.providers.base import TextDelta, ToolCallDelta
from router_service.store import Store

__all__ = ["AnswerRecorder", "CachedAnswer", "ResponseCache", "cache_key", "eligible"]

_FORMAT = 1
_MAX_ANSWER_CHARS = 1024 * 1024


def eligible(app: App, request: ChatRequest) -> bool:
    opted_in = app.config.response_cache or request.hints.response_cache
    return opted_in and request.temperature == 0


def cache_key(request: ChatRequest, max_output_tokens: int) -> str:
    """SHA-256 over everything that shapes the answer; `request` must be canonical."""
    hints = request.hints
    shape = {
        "task": request.task,
        "messages": [
            [
                m.role,
                m.content,
                m.tool_call_id,
                [[c.id, c.name, c.arguments_json] for c in m.tool_calls],
            ]
            for m in request.messages
        ],
        "tools": [[t.name, t.description, t.parameters] for t in request.tools],
        "max_output_tokens": max_output_tokens,
        "hints": [
            int(hints.tier),
            hints.force_model,
            hints.money_movement,
            hints.customer_escalation,
        ],
    }
    encoded = json.dumps(shape, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    events: tuple[TextDelta | ToolCallDelta, ...]
    finish_reason: str
    # The model and provider that produced the answer originally.
    model: str
    provider: str

    def encode(self) -> bytes:
        events: list[list[Any]] = [
            ["t", e.text]
            if isinstance(e, TextDelta)
            else ["c", e.index, e.id, e.name, e.arguments_fragment]
            for e in self.events
        ]
        return json.dumps(
            {
                "v": _FORMAT,
                "f": self.finish_reason,
                "m": self.model,
                "p": self.provider,
                "e": events,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> CachedAnswer | None:
        """The answer, or None for an entry of another format or a damaged one."""
        try:
            raw = json.loads(data)
            if raw.get("v") != _FORMAT:
                return None
            events = tuple(
                TextDelta(e[1]) if e[0] == "t" else ToolCallDelta(e[1], e[2], e[3], e[4])
                for e in raw["e"]
            )
            return cls(events, str(raw["f"]), str(raw["m"]), str(raw["p"]))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return None


class AnswerRecorder:
    """Collects a streamed answer for the cache, merging adjacent text; gives up past 1 MiB."""

    def __init__(self) -> None:
        self._events: list[TextDelta | ToolCallDelta] = []
        self._text: list[str] = []
        self._chars = 0

    def add(self, event: TextDelta | ToolCallDelta) -> None:
        if self._chars > _MAX_ANSWER_CHARS:
            return
        if isinstance(event, TextDelta):
            self._text.append(event.text)
            self._chars += len(event.text)
            return
        self._flush_text()
        self._events.append(event)
        self._chars += len(event.arguments_fragment)

    def _flush_text(self) -> None:
        if self._text:
            self._events.append(TextDelta("".join(self._text)))
            self._text.clear()

    def answer(self, finish_reason: str, model: str, provider: str) -> CachedAnswer | None:
        if self._chars > _MAX_ANSWER_CHARS:
            return None
        self._flush_text()
        return CachedAnswer(tuple(self._events), finish_reason, model, provider)


class ResponseCache:
    def __init__(self, store: Store, *, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s

    async def get(self, app: str, key: str) -> CachedAnswer | None:
        data = await self._store.cache_get(app, key)
        return None if data is None else CachedAnswer.decode(data)

    async def put(self, app: str, key: str, answer: CachedAnswer) -> None:
        await self._store.cache_put(app, key, answer.encode(), self._ttl_s)
