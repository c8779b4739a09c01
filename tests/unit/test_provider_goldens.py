"""Golden wire transcripts through the real adapters: exact usage and exact micro-dollar cost.

Each transcript in tests/fixtures/providers is served by an httpx.MockTransport (the seam), in
odd-sized chunks, to the adapter as configured in production; the test asserts what a user
would check on the bill.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from router_service.chat import ChatMessage
from router_service.config import AnthropicProviderConfig, OpenAIProviderConfig, Prices
from router_service.cost import PriceTable, Usage
from router_service.errors import ProviderServerError
from router_service.providers.anthropic import AnthropicProvider
from router_service.providers.base import (
    Provider,
    ProviderEvent,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from router_service.providers.openai_compat import OpenAICompatProvider

FIXTURES = Path(__file__).parent.parent / "fixtures" / "providers"
KEY = "sk-golden-0123456789abcdef"
GPT = PriceTable.from_config(
    Prices(
        input=Decimal("5"), cached_input=Decimal("0.50"), cache_write=Decimal(5), output=Decimal(15)
    )
)
OPUS = PriceTable.from_config(
    Prices(
        input=Decimal("5"),
        cached_input=Decimal("0.50"),
        cache_write=Decimal("6.25"),
        output=Decimal("25"),
    )
)
REQUEST = ProviderRequest(
    model="upstream-model",
    messages=(ChatMessage("system", "You review code."), ChatMessage("user", "Review this.")),
    tools=(),
    max_output_tokens=512,
    temperature=0.0,
    prompt_tokens=50,
)


def transport(body: bytes, seen: list[httpx.Request], chunk: int = 7) -> httpx.MockTransport:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), chunk):
            yield body[i : i + chunk]

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=pieces())

    return httpx.MockTransport(handle)


async def run(
    make: Callable[[httpx.AsyncClient], Provider], body: bytes, seen: list[httpx.Request]
) -> list[ProviderEvent]:
    async with httpx.AsyncClient(transport=transport(body, seen)) as client:
        return [event async for batch in make(client).stream(REQUEST) for event in batch]


def openai(stream: bool) -> Callable[[httpx.AsyncClient], Provider]:
    config = OpenAIProviderConfig(kind="openai", api_key_env="KEY", stream=stream)
    return lambda client: OpenAICompatProvider("openai", config, client, {"KEY": KEY})


def anthropic(stream: bool) -> Callable[[httpx.AsyncClient], Provider]:
    config = AnthropicProviderConfig(kind="anthropic", api_key_env="KEY", stream=stream)
    return lambda client: AnthropicProvider("anthropic", config, client, {"KEY": KEY})


def answer(events: list[ProviderEvent]) -> tuple[str, dict[int, dict[str, str]], StreamEnd]:
    text, calls = "", {}
    for event in events:
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, ToolCallDelta):
            call = calls.setdefault(event.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += event.id
            call["name"] += event.name
            call["arguments"] += event.arguments_fragment
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert sum(isinstance(e, StreamEnd) for e in events) == 1
    return text, calls, end


OPENAI_USAGE = Usage(input_tokens=2006, cached_input_tokens=1920, output_tokens=12)
# 86 uncached x $5 + 1,920 cached x $0.50 + 12 output x $15, per million tokens:
# 430 + 960 + 180 micro-dollars.
OPENAI_COST = 1570


@pytest.mark.parametrize(
    ("stream", "fixture"),
    [(True, "openai_stream_cached.sse"), (False, "openai_completion_cached.json")],
)
async def test_openai_golden(stream: bool, fixture: str) -> None:
    seen: list[httpx.Request] = []
    events = await run(openai(stream), (FIXTURES / fixture).read_bytes(), seen)
    text, calls, end = answer(events)
    assert text == "Revenue grew 12% — driven by renewals."
    assert not calls
    assert end.finish_reason == "stop" and end.model == "gpt-5.5-2026-03-05"
    assert end.usage == OPENAI_USAGE
    assert GPT.cost_micro_usd(end.usage) == OPENAI_COST
    sent: dict[str, Any] = json.loads(seen[0].content)
    assert seen[0].url == "https://api.openai.com/v1/chat/completions"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["user-agent"].startswith("llm-router")
    if stream:
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert seen[0].headers["accept-encoding"] == "identity"
    else:
        assert "stream" not in sent
        assert seen[0].headers["accept-encoding"] == "gzip, deflate"


ANTHROPIC_USAGE = Usage(
    input_tokens=21 + 3145 + 512, cached_input_tokens=3145, cache_write_tokens=512, output_tokens=87
)
# 21 x $5 + 3,145 x $0.50 + 512 x $6.25 + 87 x $25 per million tokens:
# 105 + 1,572.5 + 3,200 + 2,175 = 7,052.5 micro-dollars, rounded half up.
ANTHROPIC_COST = 7053


@pytest.mark.parametrize(
    ("stream", "fixture"),
    [
        (True, "anthropic_stream_cache_read_write.sse"),
        (False, "anthropic_message_cache_read_write.json"),
    ],
)
async def test_anthropic_golden(stream: bool, fixture: str) -> None:
    seen: list[httpx.Request] = []
    events = await run(anthropic(stream), (FIXTURES / fixture).read_bytes(), seen)
    text, calls, end = answer(events)
    assert text == "The diff introduces a race: `counter += 1` is not atomic."
    assert calls == {
        0: {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "open_issue",
            "arguments": '{"title": "Race in counter"}',
        }
    }
    assert end.finish_reason == "tool_calls" and end.model == "claude-opus-4-8-20260115"
    # message_delta repeats the input and cache counts: they replace, never add.
    assert end.usage == ANTHROPIC_USAGE
    assert OPUS.cost_micro_usd(end.usage) == ANTHROPIC_COST
    assert seen[0].url == "https://api.anthropic.com/v1/messages"
    assert seen[0].headers["x-api-key"] == KEY
    assert seen[0].headers["anthropic-version"] == "2023-06-01"
    if stream:
        # The input side is known from message_start, before the first token.
        first = events[0]
        assert isinstance(first, UsageReport)
        assert first.usage == Usage(
            input_tokens=3678, cached_input_tokens=3145, cache_write_tokens=512, output_tokens=1
        )


# What the event-stream format allows and neither wire format gives meaning to: a data field
# with no value (an event whose data is empty, or blank), and blocks with no data field, which
# dispatch nothing at all.
NO_DATA = b"data:\n\nevent: ping\ndata: \n\ndata\r\n\r\n: keep-alive\n\nevent: x\nid: 1\n\n"


@pytest.mark.parametrize(
    ("make", "fixture"),
    [(openai, "openai_stream_cached.sse"), (anthropic, "anthropic_stream_cache_read_write.sse")],
    ids=["openai", "anthropic"],
)
async def test_events_without_data_change_no_answer(
    make: Callable[[bool], Callable[[httpx.AsyncClient], Provider]], fixture: str
) -> None:
    golden = (FIXTURES / fixture).read_bytes()
    blocks = [block for block in golden.split(b"\n\n") if block]
    padded = NO_DATA + b"".join(block + b"\n\n" + NO_DATA for block in blocks)
    assert answer(await run(make(True), padded, [])) == answer(await run(make(True), golden, []))


async def test_a_streamed_request_answered_with_one_json_document() -> None:
    # Servers that ignore `stream: true` answer with the whole completion ...
    seen: list[httpx.Request] = []
    body = (FIXTURES / "openai_completion_cached.json").read_bytes()

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        events = [e async for batch in openai(stream=True)(client).stream(REQUEST) for e in batch]
    assert answer(events)[2].usage == OPENAI_USAGE
    assert json.loads(seen[0].content)["stream"] is True

    # ... and some report errors as a JSON object with status 200.
    error = b'{"error": {"message": "model overloaded", "type": "server_error"}}'

    async def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=error, headers={"content-type": "application/json"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as client:
        with pytest.raises(ProviderServerError, match=r"HTTP 500 \(server_error\)"):
            async for _ in openai(stream=True)(client).stream(REQUEST):
                pass
