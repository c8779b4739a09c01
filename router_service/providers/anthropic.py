"""The Anthropic Messages API (`POST {base_url}/v1/messages`).

Pure functions build the request body and parse events and responses; `AnthropicProvider` only
moves bytes through the shared `HttpEndpoint`.

Prompt caching is explicit here: `request_body` puts a `cache_control` marker on the last tool
definition and on the last system block, each only when the prefix up to it (tools, then
system, already canonical: see `router_service.prefix`) is long enough for the provider to
cache it. Shorter prefixes are not cached anyway, so a marker there would buy nothing.

Usage is normalized: Anthropic's `input_tokens` excludes `cache_read_input_tokens` and
`cache_creation_input_tokens`, so normalized input is the sum of the three. A stream reports
input usage in `message_start` and the cumulative output (and, in newer API versions, the input
and cache fields again) in `message_delta`; later values replace earlier ones, never add to
them. The `message_start` usage is passed on at once as a `UsageReport`, so a stream that breaks
half-way is billed the provider's own input counts.

A streamed tool call's arguments are the `partial_json` pieces joined; a call with no input
streams none (or only empty ones), and its arguments are then `{}`, as in a whole message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import httpx
import orjson

from router_service.chat import ChatMessage
from router_service.config import AnthropicProviderConfig
from router_service.cost import Usage
from router_service.providers.base import (
    ProviderEvent,
    ProviderEvents,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from router_service.providers.errors import UpstreamErrorEvent
from router_service.providers.http import HttpEndpoint, encode_json
from router_service.tokens import estimate_tokens

__all__ = [
    "AnthropicProvider",
    "EventParser",
    "finish_reason",
    "parse_message",
    "request_body",
    "usage_of",
]

# Anthropic's temperature range is [0, 1]; the router accepts OpenAI's [0, 2].
_MAX_TEMPERATURE = 1.0
_CACHE_MARKER = {"type": "ephemeral"}
# Stop reasons in OpenAI's vocabulary (stop, length, tool_calls, content_filter), which callers
# see from every provider.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    # The output was cut short by the context window rather than by max_tokens.
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str:
    """The finish reason callers see: OpenAI's name for an Anthropic stop reason that has one.
    One that has none passes through as Anthropic names it: `pause_turn` (a server tool paused
    a long turn; the caller continues it by sending the conversation back), and any reason
    added after this was written."""
    if not stop_reason:
        return "stop"
    return _FINISH_REASONS.get(stop_reason, stop_reason)


def _content_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}
        ]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        # Validation let only JSON objects through (api/validation.py).
        arguments = json.loads(call.arguments_json or "{}")
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def _messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    """Conversation turns; consecutive turns of one role merge (tool results answer as the
    user, and parallel tool results must share one user turn)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _content_blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def request_body(
    request: ProviderRequest, *, stream: bool, cache_min_tokens: int
) -> dict[str, Any]:
    """The JSON body of a Messages call, with cache markers where they pay off."""
    tools: list[dict[str, Any]] = [
        {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
        for tool in request.tools
    ]
    system: list[dict[str, Any]] = [
        {"type": "text", "text": m.content} for m in request.messages if m.role == "system"
    ]
    prefix_tokens = estimate_tokens(json.dumps(tools)) if tools else 0
    if tools and prefix_tokens >= cache_min_tokens:
        tools[-1]["cache_control"] = _CACHE_MARKER
    prefix_tokens += sum(estimate_tokens(block["text"]) for block in system)
    if system and prefix_tokens >= cache_min_tokens:
        system[-1]["cache_control"] = _CACHE_MARKER
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_output_tokens,
        "messages": _messages(request.messages),
    }
    if system:
        body["system"] = system
    if tools:
        body["tools"] = tools
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, _MAX_TEMPERATURE)
    if stream:
        body["stream"] = True
    return body


def usage_of(raw: Mapping[str, Any]) -> Usage:
    """Normalized usage from an Anthropic `usage` object."""
    uncached = int(raw.get("input_tokens") or 0)
    read = int(raw.get("cache_read_input_tokens") or 0)
    written = int(raw.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=uncached + read + written,
        cached_input_tokens=read,
        cache_write_tokens=written,
        output_tokens=int(raw.get("output_tokens") or 0),
    )


class EventParser:
    """One message, streamed event by event or whole (an `http.AnswerParser`)."""

    __slots__ = (
        "_no_input",
        "_raw_usage",
        "_request",
        "_tool_ordinals",
        "done",
        "model",
        "started",
        "stop",
    )

    def __init__(self, request: ProviderRequest) -> None:
        self._request = request
        self.done = False
        self.started = False
        self.stop: str | None = None
        self.model = ""
        # The latest value of each usage field, as reported (not yet normalized).
        self._raw_usage: dict[str, int] = {}
        # Content block index -> the tool call's position among the message's tool calls.
        self._tool_ordinals: dict[int, int] = {}
        # Tool call blocks whose input has streamed nothing yet: `{}` if it stays so.
        self._no_input: set[int] = set()

    @property
    def complete(self) -> bool:
        return self.done

    def feed(self, data: bytes) -> tuple[ProviderEvent, ...]:
        event = orjson.loads(data)  # per event: 4x faster than json.loads here
        _raise_if_error(event)
        return self.event(event)

    def event(self, event: Mapping[str, Any]) -> tuple[ProviderEvent, ...]:
        """The answer's events in one decoded stream event."""
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                self.started = True
                return (TextDelta(delta["text"]),)
            if delta_type == "input_json_delta":
                index = event["index"]
                ordinal = self._tool_ordinals[index]
                fragment = delta.get("partial_json") or ""
                if fragment and not fragment.isspace():
                    self._no_input.discard(index)
                return (ToolCallDelta(ordinal, "", "", fragment),)
            if delta_type == "thinking_delta":
                self.started = True  # not part of the answer, but the model is producing tokens
            return ()
        if kind == "content_block_start":
            block = event["content_block"]
            block_type = block.get("type")
            if block_type == "tool_use":
                self.started = True
                ordinal = len(self._tool_ordinals)
                self._tool_ordinals[event["index"]] = ordinal
                self._no_input.add(event["index"])
                return (ToolCallDelta(ordinal, block["id"], block["name"], ""),)
            if block_type == "text" and block.get("text"):
                self.started = True
                return (TextDelta(block["text"]),)
            return ()
        if kind == "message_start":
            message = event["message"]
            self.model = message.get("model") or ""
            return self._usage_report(message.get("usage"))
        if kind == "message_delta":
            self.stop = (event.get("delta") or {}).get("stop_reason") or self.stop
            return self._usage_report(event.get("usage"))
        if kind == "content_block_stop":
            return self._empty_input(event.get("index"))
        if kind == "message_stop":
            self.done = True
            # A tool call block left unstopped is over too.
            return tuple(e for index in sorted(self._no_input) for e in self._empty_input(index))
        return ()  # ping, and event types added after this was written

    def _empty_input(self, index: int | None) -> tuple[ProviderEvent, ...]:
        """`{}` as the arguments of the tool call at block `index` if its input streamed
        nothing: a call's arguments are a JSON object, as in a whole message."""
        if index is None or index not in self._no_input:
            return ()
        self._no_input.discard(index)
        return (ToolCallDelta(self._tool_ordinals[index], "", "", "{}"),)

    def _usage_report(self, raw: Mapping[str, Any] | None) -> tuple[ProviderEvent, ...]:
        if not raw:
            return ()
        for key, value in raw.items():
            # Counts are cumulative: a later report replaces an earlier one, never adds to it.
            if type(value) is int:
                self._raw_usage[key] = value
        return (UsageReport(usage_of(self._raw_usage)),)

    def end(self) -> StreamEnd:
        return StreamEnd(
            finish_reason=finish_reason(self.stop),
            usage=usage_of(self._raw_usage),
            model=self.model or self._request.model,
        )

    def whole(self, document: bytes) -> list[ProviderEvent]:
        body = json.loads(document)
        _raise_if_error(body)
        return parse_message(body, self._request)


def parse_message(body: Mapping[str, Any], request: ProviderRequest) -> list[ProviderEvent]:
    """The events of a whole (not streamed) message, ending with `StreamEnd`."""
    events: list[ProviderEvent] = []
    tools = 0
    for block in body["content"]:
        block_type = block.get("type")
        if block_type == "text" and block.get("text"):
            events.append(TextDelta(block["text"]))
        elif block_type == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            events.append(ToolCallDelta(tools, block["id"], block["name"], arguments))
            tools += 1
    events.append(
        StreamEnd(
            finish_reason=finish_reason(body.get("stop_reason")),
            usage=usage_of(body.get("usage") or {}),
            model=body.get("model") or request.model,
        )
    )
    return events


def _raise_if_error(document: Any) -> None:
    """An Anthropic error object (`{"type": "error", "error": {...}}`) in place of the answer."""
    if isinstance(document, dict) and document.get("type") == "error":
        error = document.get("error") or {}
        raise UpstreamErrorEvent(str(error.get("type") or ""), str(error.get("message") or ""))


class AnthropicProvider:
    """A Messages endpoint; one per configured provider, sharing the client's pool."""

    def __init__(
        self,
        name: str,
        config: AnthropicProviderConfig,
        client: httpx.AsyncClient,
        environ: Mapping[str, str],
    ) -> None:
        self._name = name
        self._config = config
        self._endpoint = HttpEndpoint(
            name,
            config,
            client,
            environ,
            credentials=lambda key: {"x-api-key": key},
            headers={"anthropic-version": config.api_version},
        )

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        """Stops reading the ends of finished answers; connections belong to the shared client."""
        await self._endpoint.aclose()

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvents, None]:
        config = self._config
        body = request_body(
            request,
            stream=config.stream,
            cache_min_tokens=config.cache_min_tokens_for(request.model),
        )
        # Closed here, at once, when this stream is closed: the upstream response with it.
        answer = self._endpoint.answer("/v1/messages", encode_json(body), EventParser(request))
        async with aclosing(answer) as batches:
            async for batch in batches:
                yield batch
