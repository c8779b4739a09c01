"""OpenAI-compatible chat completions (`POST {base_url}/chat/completions`), at any base URL.

This one wire format serves OpenAI, Z.ai's GLM, Moonshot's Kimi, DeepSeek, vLLM, Together and
most other hosts. Pure functions build the request body and parse chunks and responses;
`OpenAICompatProvider` only moves bytes through the shared `HttpEndpoint`.

The output limit goes in `max_tokens`, or in `max_completion_tokens` for OpenAI's own API, whose
reasoning models refuse `max_tokens` (`max_tokens_field: auto`, decided once per provider).

Streaming asks for usage with `stream_options.include_usage`: it arrives in a last chunk whose
`choices` is empty, before `data: [DONE]` (Moonshot's Kimi puts it in the last chunk's
`choices[0].usage` instead, which is read when the chunk has no top-level `usage`). Usage is
normalized: `prompt_tokens` already includes the cached tokens
(`prompt_tokens_details.cached_tokens`; DeepSeek says `prompt_cache_hit_tokens`, Moonshot a
top-level `cached_tokens`), and these APIs do not bill cache writes.

A refusal (`refusal` beside `content`) is streamed as text, after any content of the same delta,
and the answer then finishes `content_filter` instead of `stop`, as an Anthropic refusal does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

import httpx
import orjson

from router_service.chat import ChatMessage
from router_service.config import OpenAIProviderConfig
from router_service.cost import Usage
from router_service.providers.base import (
    ProviderEvent,
    ProviderEvents,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
)
from router_service.providers.errors import UpstreamErrorEvent
from router_service.providers.http import HttpEndpoint, encode_json
from router_service.tokens import TextSize, estimate_tokens

__all__ = [
    "ChunkParser",
    "OpenAICompatProvider",
    "max_tokens_field",
    "parse_completion",
    "parse_usage",
    "request_body",
]

log = logging.getLogger(__name__)

_DONE = b"[DONE]"
# Where `max_tokens_field: auto` means `max_completion_tokens`: OpenAI's own API, which takes it
# from every chat model and refuses the deprecated `max_tokens` from its reasoning models.
# Not every compatible server (vLLM, Z.ai, Moonshot, DeepSeek ...) knows it.
_OPENAI_HOSTS = frozenset({"api.openai.com"})


def max_tokens_field(configured: str, base_url: str) -> str:
    """The body field for the output limit: `configured`, or for `auto` the one the server at
    `base_url` takes."""
    if configured != "auto":
        return configured
    host = httpx.URL(base_url).host.lower()
    return "max_completion_tokens" if host in _OPENAI_HOSTS else "max_tokens"


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def request_body(
    request: ProviderRequest, *, stream: bool, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """The JSON body of a chat completions call."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [_message(m) for m in request.messages],
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in request.tools
        ]
    body[max_tokens_field] = request.max_output_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def parse_usage(usage: Mapping[str, Any]) -> Usage:
    """Normalized usage from an OpenAI-style `usage` object (input includes cached tokens)."""
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = (
        details.get("cached_tokens")
        or usage.get("prompt_cache_hit_tokens")  # DeepSeek
        or usage.get("cached_tokens")  # Moonshot
        or 0
    )
    return Usage(
        input_tokens=prompt,
        # A server that claims more cached than prompt tokens is not believed past the prompt.
        cached_input_tokens=min(int(cached), prompt),
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


class ChunkParser:
    """One answer, streamed chunk by chunk or whole (an `http.AnswerParser`)."""

    __slots__ = (
        "_on_missing_usage",
        "_request",
        "done",
        "finish_reason",
        "model",
        "output",
        "refused",
        "started",
        "usage",
    )

    def __init__(
        self, request: ProviderRequest, *, on_missing_usage: Callable[[], None] | None = None
    ) -> None:
        self._request = request
        # Called when a stream ends without usage: the server ignores include_usage.
        self._on_missing_usage = on_missing_usage
        self.done = False
        self.started = False
        self.finish_reason: str | None = None
        # The model refused (a `refusal` delta): the answer finishes `content_filter`.
        self.refused = False
        self.model = ""
        self.usage: Usage | None = None
        self.output = TextSize()

    @property
    def complete(self) -> bool:
        """`[DONE]`, or a finish reason from a server that ends the body without `[DONE]`."""
        return self.done or self.finish_reason is not None

    def feed(self, data: bytes) -> tuple[ProviderEvent, ...]:
        if data == _DONE:
            self.done = True
            return ()
        chunk = orjson.loads(data)  # per chunk: 4x faster than json.loads here
        _raise_if_error(chunk)
        return self.chunk(chunk)

    def chunk(self, chunk: Mapping[str, Any]) -> tuple[ProviderEvent, ...]:
        """The events of one decoded chunk."""
        usage = chunk.get("usage")
        if usage:
            self.usage = parse_usage(usage)
        choices = chunk.get("choices")
        if not choices:
            return ()
        if not self.model:
            self.model = chunk.get("model") or ""
        choice = choices[0]
        if not usage and choice.get("usage"):
            self.usage = parse_usage(choice["usage"])  # Moonshot's Kimi reports it here
        finish = choice.get("finish_reason")
        if finish:
            self.finish_reason = finish
        delta = choice.get("delta")
        if not delta:
            return ()
        content = delta.get("content")
        refusal = delta.get("refusal")
        if refusal:
            self.refused = True
            content = content + refusal if content else refusal
        calls = delta.get("tool_calls")
        if calls:
            self.started = True
            events: list[ProviderEvent] = []
            if content:
                self.output.add(content)
                events.append(TextDelta(content))
            for call in calls:
                function = call.get("function") or {}
                events.append(
                    ToolCallDelta(
                        index=call.get("index", 0),
                        id=call.get("id") or "",
                        name=function.get("name") or "",
                        arguments_fragment=function.get("arguments") or "",
                    )
                )
            return tuple(events)
        if content:
            self.started = True
            self.output.add(content)
            return (TextDelta(content),)
        if delta.get("reasoning_content") or delta.get("reasoning"):
            # Reasoning is not part of the answer, but it is tokens: the model is working.
            self.started = True
        return ()

    def end(self) -> StreamEnd:
        usage = self.usage
        if usage is None:
            if self._on_missing_usage is not None:
                self._on_missing_usage()
            usage = _estimated_usage(self._request, self.output.tokens)
        return StreamEnd(
            finish_reason=_finish_reason(self.finish_reason, refused=self.refused),
            usage=usage,
            model=self.model or self._request.model,
        )

    def whole(self, document: bytes) -> list[ProviderEvent]:
        body = json.loads(document)
        _raise_if_error(body)
        return parse_completion(body, self._request)


def _finish_reason(finish: str | None, *, refused: bool) -> str:
    """The finish reason as callers see it: a refusal that ended as `stop` is `content_filter`,
    as with every provider; one cut short keeps `length`."""
    if refused and finish in (None, "stop"):
        return "content_filter"
    return finish or "stop"


def _estimated_usage(request: ProviderRequest, output_tokens: int) -> Usage:
    """What to bill when a server reports no usage at all."""
    return Usage(input_tokens=request.prompt_tokens, output_tokens=output_tokens)


def parse_completion(body: Mapping[str, Any], request: ProviderRequest) -> list[ProviderEvent]:
    """The events of a whole (not streamed) chat completion, ending with `StreamEnd`."""
    choice = body["choices"][0]
    message = choice["message"]
    events: list[ProviderEvent] = []
    refusal = message.get("refusal") or ""
    content = (message.get("content") or "") + refusal
    if content:
        events.append(TextDelta(content))
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call["function"]
        events.append(ToolCallDelta(index, call["id"], function["name"], function["arguments"]))
    usage = body.get("usage") or choice.get("usage")
    events.append(
        StreamEnd(
            finish_reason=_finish_reason(choice.get("finish_reason"), refused=bool(refusal)),
            usage=parse_usage(usage)
            if usage
            else _estimated_usage(request, estimate_tokens(content)),
            model=body.get("model") or request.model,
        )
    )
    return events


def _raise_if_error(document: Any) -> None:
    """An OpenAI-style error object (`{"error": {...}}`) where the answer should be. Both its
    type and code go on: OpenAI's code says more (`rate_limit_exceeded` has the type `tokens`)."""
    error = document.get("error") if isinstance(document, dict) else None
    if not error:
        return
    if isinstance(error, dict):
        raise UpstreamErrorEvent(
            str(error.get("type") or error.get("code") or ""),
            str(error.get("message") or ""),
            str(error.get("code") or ""),
        )
    raise UpstreamErrorEvent("", str(error))


class OpenAICompatProvider:
    """A chat completions endpoint; one per configured provider, sharing the client's pool."""

    def __init__(
        self,
        name: str,
        config: OpenAIProviderConfig,
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
            credentials=lambda key: {"authorization": f"Bearer {key}"},
        )
        self._max_tokens_field = max_tokens_field(config.max_tokens_field, self._endpoint.base_url)
        self._warned_no_usage = False

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        """Stops reading the ends of finished answers; connections belong to the shared client."""
        await self._endpoint.aclose()

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvents, None]:
        body = request_body(
            request, stream=self._config.stream, max_tokens_field=self._max_tokens_field
        )
        parser = ChunkParser(request, on_missing_usage=self._missing_usage)
        # Closed here, at once, when this stream is closed: the upstream response with it.
        answer = self._endpoint.answer("/chat/completions", encode_json(body), parser)
        async with aclosing(answer) as batches:
            async for batch in batches:
                yield batch

    def _missing_usage(self) -> None:
        if not self._warned_no_usage:
            self._warned_no_usage = True
            log.warning(
                "%s sent no usage (it ignores stream_options.include_usage): "
                "billing estimated token counts",
                self._name,
            )
