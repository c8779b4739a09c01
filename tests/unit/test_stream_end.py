"""The end of a streamed answer reaches the caller as soon as the stream says it is over
(`data: [DONE]`, `message_stop`), even when the server keeps the body open; the rest of the
body is read apart, and a connection whose body ends promptly is still reused. Against raw
servers on loopback, through the router's lean transport and through httpx's own."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import httpx
import pytest

from router_service.config import AnthropicProviderConfig, OpenAIProviderConfig
from router_service.providers.anthropic import AnthropicProvider
from router_service.providers.base import Provider, ProviderRequest, StreamEnd, TextDelta
from router_service.providers.http import build_http_client
from router_service.providers.openai_compat import OpenAICompatProvider
from tests.support.raw_http import RawServer, raw_server
from tests.support.waiting import eventually

REQUEST = ProviderRequest("m", (), (), 100, None)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


OPENAI_ANSWER = chunk(
    sse({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]})
    + sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    + b"data: [DONE]\n\n"
)
ANTHROPIC_ANSWER = chunk(
    sse({"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 3}}})
    + sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}})
    + sse(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hi"},
        }
    )
    + sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}})
    + sse({"type": "message_stop"}, "message_stop")
)


@asynccontextmanager
async def provider(
    kind: str, server: RawServer, *, lean: bool
) -> AsyncIterator[tuple[Provider, httpx.AsyncClient]]:
    """`kind`'s adapter on `server`, through the lean transport or through httpx's own."""
    config: OpenAIProviderConfig | AnthropicProviderConfig
    if kind == "openai":
        config = OpenAIProviderConfig(kind="openai", base_url=server.url("/v1"))
    else:
        config = AnthropicProviderConfig(kind="anthropic", base_url=server.url())
    client = build_http_client({"p": config}, {}) if lean else httpx.AsyncClient()
    async with client:
        adapter: Provider = (
            OpenAICompatProvider("p", config, client, {})
            if isinstance(config, OpenAIProviderConfig)
            else AnthropicProvider("p", config, client, {})
        )
        try:
            yield adapter, client
        finally:
            await adapter.aclose()


async def answer(adapter: Provider) -> tuple[str, StreamEnd, float]:
    """The answer's text and end, and how long the stream took to finish."""
    started = time.perf_counter()
    text, ends = "", []
    async with aclosing(adapter.stream(REQUEST)) as stream:
        async for batch in stream:
            text += "".join(e.text for e in batch if isinstance(e, TextDelta))
            ends += [e for e in batch if isinstance(e, StreamEnd)]
    (end,) = ends
    return text, end, time.perf_counter() - started


ANSWERS = [("openai", OPENAI_ANSWER), ("anthropic", ANTHROPIC_ANSWER)]


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "httpx"])
@pytest.mark.parametrize(("kind", "body"), ANSWERS, ids=["openai", "anthropic"])
async def test_the_end_comes_at_once_though_the_body_stays_open(
    kind: str, body: bytes, lean: bool
) -> None:
    never = asyncio.Event()  # the server never ends the body
    async with (
        raw_server([CHUNKED + body, never, LAST_CHUNK]) as server,
        provider(kind, server, lean=lean) as (adapter, _client),
    ):
        text, end, took = await answer(adapter)
        assert text == "Hi" and end.finish_reason == "stop"
        # Not held back by reading the rest of the body (given up on after 1 s).
        assert took < 0.5


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "httpx"])
@pytest.mark.parametrize(("kind", "body"), ANSWERS, ids=["openai", "anthropic"])
async def test_a_body_that_ends_soon_after_keeps_its_connection(
    kind: str, body: bytes, lean: bool
) -> None:
    # The end of the framing comes a moment after the end of the stream, in a read of its own.
    async with (
        raw_server([CHUNKED + body, 0.05, LAST_CHUNK], [CHUNKED + body + LAST_CHUNK]) as server,
        provider(kind, server, lean=lean) as (adapter, _client),
    ):
        for _ in range(2):
            text, _end, took = await answer(adapter)
            assert text == "Hi" and took < 0.5
            # Read apart: done once the body has ended.
            await eventually(lambda: not adapter._endpoint._draining)
        assert server.connections == 1


async def test_closing_the_provider_stops_reading_ends_of_bodies() -> None:
    never = asyncio.Event()
    async with (
        raw_server([CHUNKED + OPENAI_ANSWER, never, LAST_CHUNK]) as server,
        provider("openai", server, lean=True) as (adapter, _client),
    ):
        await answer(adapter)
        endpoint = adapter._endpoint
        assert endpoint._draining
        await adapter.aclose()
        assert not endpoint._draining
        # The half-read connection was closed, not pooled: once the server finishes the body,
        # it reads the end of the connection, not another request.
        never.set()
        await eventually(lambda: server.closed_by_client == 1)
