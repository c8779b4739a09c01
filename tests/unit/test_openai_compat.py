"""The OpenAI-compatible wire format: request bodies, chunks, usage, whole completions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_service.chat import ChatMessage, ToolCall, ToolSpec
from router_service.config import OpenAIProviderConfig
from router_service.cost import Usage
from router_service.errors import ProviderError, ProviderRateLimited
from router_service.providers.base import (
    ProviderEvents,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
)
from router_service.providers.errors import UpstreamErrorEvent
from router_service.providers.openai_compat import (
    ChunkParser,
    OpenAICompatProvider,
    max_tokens_field,
    parse_completion,
    parse_usage,
    request_body,
)
from router_service.providers.sse import SSEDecoder

GOLDEN = Path(__file__).parent.parent / "fixtures" / "providers" / "openai_stream_cached.sse"

REQUEST = ProviderRequest(
    model="glm-5.2",
    messages=(
        ChatMessage("system", "You file tickets."),
        ChatMessage("user", "Open a ticket for the outage."),
        ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "open", '{"t":"x"}'),)),
        ChatMessage("tool", "ticket 42", tool_call_id="call_1"),
    ),
    tools=(ToolSpec("open", "Open a ticket.", {"type": "object"}),),
    max_output_tokens=300,
    temperature=0.2,
    prompt_tokens=40,
)


def test_request_body() -> None:
    body = request_body(REQUEST, stream=True)
    assert body["model"] == "glm-5.2"
    assert body["messages"] == [
        {"role": "system", "content": "You file tickets."},
        {"role": "user", "content": "Open a ticket for the outage."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "open", "arguments": '{"t":"x"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "ticket 42"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "open",
                "description": "Open a ticket.",
                "parameters": {"type": "object"},
            },
        }
    ]
    assert body["max_tokens"] == 300 and body["temperature"] == 0.2
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_request_body_variants() -> None:
    body = request_body(REQUEST, stream=False, max_tokens_field="max_completion_tokens")
    assert "stream" not in body and "stream_options" not in body
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body


@pytest.mark.parametrize(
    ("configured", "base_url", "field"),
    [
        # auto: OpenAI's own API takes max_completion_tokens (its reasoning models refuse
        # max_tokens); any other server gets max_tokens.
        ("auto", "https://api.openai.com/v1", "max_completion_tokens"),
        ("auto", "https://API.OpenAI.com:443/v1", "max_completion_tokens"),
        ("auto", "http://127.0.0.1:8000/v1", "max_tokens"),
        ("auto", "https://api.moonshot.ai/v1", "max_tokens"),
        ("auto", "https://api.openai.com.proxy.example/v1", "max_tokens"),
        ("auto", "https://proxy.example/api.openai.com/v1", "max_tokens"),
        # An explicit value is kept wherever the server is.
        ("max_tokens", "https://api.openai.com/v1", "max_tokens"),
        ("max_completion_tokens", "http://vllm:8000/v1", "max_completion_tokens"),
    ],
)
def test_max_tokens_field(configured: str, base_url: str, field: str) -> None:
    assert max_tokens_field(configured, base_url) == field


def test_max_tokens_field_is_auto_by_default() -> None:
    assert OpenAIProviderConfig(kind="openai").max_tokens_field == "auto"


@pytest.mark.parametrize(
    ("config", "environ", "field"),
    [
        ({}, {}, "max_completion_tokens"),
        ({"base_url_env": "OPENAI_BASE_URL"}, {}, "max_completion_tokens"),
        (
            {"base_url_env": "OPENAI_BASE_URL"},
            {"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"},
            "max_tokens",
        ),
        ({"base_url": "https://api.z.ai/api/paas/v4"}, {}, "max_tokens"),
        (
            {
                "base_url": "https://api.z.ai/api/paas/v4",
                "max_tokens_field": "max_completion_tokens",
            },
            {},
            "max_completion_tokens",
        ),
    ],
)
async def test_the_provider_sends_the_output_limit_where_its_server_takes_it(
    config: dict[str, Any], environ: dict[str, str], field: str
) -> None:
    """Decided from the base URL as it resolves (the environment's, if it names one)."""
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        settings = OpenAIProviderConfig(kind="openai", stream=False, **config)
        provider = OpenAICompatProvider("p", settings, client, environ)
        async with aclosing(provider.stream(REQUEST)) as stream:
            [batch async for batch in stream]
    (body,) = sent
    assert body[field] == REQUEST.max_output_tokens
    assert not ({"max_tokens", "max_completion_tokens"} - {field}) & body.keys()


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # OpenAI, Z.ai
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 64},
            },
            Usage(100, 64, 0, 7),
        ),
        # null details, as some servers send
        (
            {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": None},
            Usage(100, 0, 0, 7),
        ),
        # DeepSeek
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "prompt_cache_hit_tokens": 80,
                "prompt_cache_miss_tokens": 20,
            },
            Usage(100, 80, 0, 7),
        ),
        # Moonshot
        ({"prompt_tokens": 100, "completion_tokens": 7, "cached_tokens": 50}, Usage(100, 50, 0, 7)),
        # A server that claims more cached than prompt tokens is held to the prompt.
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 99},
            },
            Usage(10, 10, 0, 1),
        ),
    ],
)
def test_usage_is_normalized(usage: dict[str, Any], expected: Usage) -> None:
    assert parse_usage(usage) == expected


def chunk(delta: dict[str, Any] | None = None, **extra: Any) -> bytes:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": extra.pop("finish", None)}]
    )
    return json.dumps({"model": "glm-5.2-0415", "choices": choices, **extra}).encode()


def test_chunks_become_events() -> None:
    parser = ChunkParser(REQUEST)
    assert parser.feed(chunk({"role": "assistant", "content": ""})) == ()
    assert not parser.started
    assert parser.feed(chunk({"content": "Hi"})) == (TextDelta("Hi"),)
    assert parser.started
    first_call = {
        "index": 0,
        "id": "call_9",
        "type": "function",
        "function": {"name": "open", "arguments": ""},
    }
    assert parser.feed(chunk({"tool_calls": [first_call]})) == (
        ToolCallDelta(0, "call_9", "open", ""),
    )
    assert parser.feed(
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"t"'}}]})
    ) == (ToolCallDelta(0, "", "", '{"t"'),)
    assert parser.feed(chunk({}, finish="tool_calls")) == ()
    assert parser.complete and not parser.done
    usage = {
        "prompt_tokens": 30,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert parser.feed(chunk(None, usage=usage)) == ()
    assert parser.feed(b"[DONE]") == () and parser.done
    assert parser.end() == StreamEnd("tool_calls", Usage(30, 0, 0, 5), "glm-5.2-0415")


def test_reasoning_counts_as_the_first_token_but_is_not_answer() -> None:
    parser = ChunkParser(REQUEST)
    assert parser.feed(chunk({"reasoning_content": "Let me think"})) == ()
    assert parser.started


def test_an_error_chunk_raises() -> None:
    parser = ChunkParser(REQUEST)
    with pytest.raises(UpstreamErrorEvent) as caught:
        parser.feed(b'{"error": {"message": "overloaded", "type": "server_error"}}')
    assert caught.value.error_type == "server_error"


def test_usage_in_the_last_choice_is_read() -> None:
    # Moonshot's Kimi: usage inside the final chunk's choice, not beside it.
    parser = ChunkParser(REQUEST)
    parser.feed(chunk({"role": "assistant", "content": "po"}))
    last = {
        "model": "kimi-k2.7",
        "choices": [
            {
                "index": 0,
                "delta": {},
                "finish_reason": "stop",
                "usage": {"prompt_tokens": 900, "completion_tokens": 12, "cached_tokens": 512},
            }
        ],
    }
    parser.feed(json.dumps(last).encode())
    parser.feed(b"[DONE]")
    assert parser.end().usage == Usage(900, 512, 0, 12)


def test_top_level_usage_wins_over_the_choice_usage() -> None:
    parser = ChunkParser(REQUEST)
    both = {
        "choices": [
            {"index": 0, "delta": {"content": "x"}, "usage": {"prompt_tokens": 1}},
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 5},
    }
    parser.feed(json.dumps(both).encode())
    assert parser.end().usage == Usage(30, 0, 0, 5)
    whole = {
        "choices": [{"message": {"content": "x"}, "usage": {"prompt_tokens": 1}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 5},
    }
    end = parse_completion(whole, REQUEST)[-1]
    assert isinstance(end, StreamEnd) and end.usage == Usage(30, 0, 0, 5)
    kimi = {"choices": [{"message": {"content": "x"}, "usage": {"prompt_tokens": 9}}]}
    end = parse_completion(kimi, REQUEST)[-1]
    assert isinstance(end, StreamEnd) and end.usage == Usage(9, 0, 0, 0)


def test_a_refusal_is_text_that_finishes_as_content_filter() -> None:
    parser = ChunkParser(REQUEST)
    # OpenAI's first chunk names the refusal field with nothing in it: no refusal yet.
    assert parser.feed(chunk({"role": "assistant", "content": "", "refusal": None})) == ()
    assert parser.feed(chunk({"refusal": "I'm sorry, "})) == (TextDelta("I'm sorry, "),)
    assert parser.started
    assert parser.feed(chunk({"refusal": "I can't help."})) == (TextDelta("I can't help."),)
    parser.feed(chunk({}, finish="stop"))
    assert parser.end().finish_reason == "content_filter"


def test_a_delta_with_content_and_refusal_keeps_both_content_first() -> None:
    parser = ChunkParser(REQUEST)
    assert parser.feed(chunk({"content": "Well. ", "refusal": "No."})) == (TextDelta("Well. No."),)
    assert parser.end().finish_reason == "content_filter"


def test_a_refusal_cut_short_still_says_length() -> None:
    parser = ChunkParser(REQUEST)
    parser.feed(chunk({"refusal": "I can"}, finish="length"))
    assert parser.end().finish_reason == "length"


def test_no_refusal_finishes_as_the_server_says() -> None:
    parser = ChunkParser(REQUEST)
    parser.feed(chunk({"content": "Hi", "refusal": ""}, finish="stop"))
    assert parser.end().finish_reason == "stop"


def test_a_whole_refusal_finishes_as_content_filter() -> None:
    body = {
        "choices": [
            {
                "message": {"role": "assistant", "content": None, "refusal": "I can't."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3},
    }
    assert parse_completion(body, REQUEST) == [
        TextDelta("I can't."),
        StreamEnd("content_filter", Usage(9, 0, 0, 3), REQUEST.model),
    ]
    body["choices"][0]["message"] = {"content": "Sure.", "refusal": None}
    assert parse_completion(body, REQUEST)[-1] == StreamEnd("stop", Usage(9, 0, 0, 3), "glm-5.2")


def test_an_error_chunk_passes_its_code_on() -> None:
    parser = ChunkParser(REQUEST)
    error = {"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}
    with pytest.raises(UpstreamErrorEvent) as caught:
        parser.feed(json.dumps({"error": error}).encode())
    assert caught.value.error_type == "tokens"
    assert caught.value.code == "rate_limit_exceeded"


def test_missing_usage_is_estimated_and_reported() -> None:
    told: list[bool] = []
    parser = ChunkParser(REQUEST, on_missing_usage=lambda: told.append(True))
    parser.feed(chunk({"content": "x" * 40}, finish="stop"))
    end = parser.end()
    assert told == [True]
    assert end.usage == Usage(input_tokens=40, output_tokens=10)


def test_whole_completion_with_tool_calls() -> None:
    body = {
        "model": "kimi-k2.7",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "open", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3},
    }
    assert parse_completion(body, REQUEST) == [
        ToolCallDelta(0, "c1", "open", "{}"),
        StreamEnd("tool_calls", Usage(9, 0, 0, 3), "kimi-k2.7"),
    ]


@given(st.lists(st.integers(0, 4000), max_size=20))
def test_a_golden_stream_split_anywhere_parses_the_same(cuts: list[int]) -> None:
    data = GOLDEN.read_bytes()
    points = sorted({c % (len(data) + 1) for c in cuts})
    decoder, parser, text = SSEDecoder(), ChunkParser(REQUEST), ""
    for a, b in zip([0, *points], [*points, len(data)], strict=True):
        for sse in decoder.feed(data[a:b]):
            for event in parser.feed(sse.data):
                assert isinstance(event, TextDelta)
                text += event.text
    assert parser.done
    assert text == "Revenue grew 12% — driven by renewals."
    assert parser.end().usage == Usage(2006, 1920, 0, 12)


async def test_closing_the_stream_closes_the_upstream_response_at_once() -> None:
    closed: list[bool] = []

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for i in range(1000):
                chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(0.001)

        async def aclose(self) -> None:
            closed.append(True)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Endless())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        config = OpenAIProviderConfig(kind="openai", base_url="http://upstream/v1")
        stream = OpenAICompatProvider("p", config, client, {}).stream(REQUEST)
        for _ in range(3):
            await anext(stream)
        await stream.aclose()
        # Not left to the garbage collector: the caller went away, the upstream stops now.
        assert closed == [True]


def sse(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk)}\n\n".encode()


def text_chunk(text: str) -> bytes:
    return sse({"choices": [{"index": 0, "delta": {"content": text}}]})


@asynccontextmanager
async def streamed(reads: list[bytes]) -> AsyncIterator[AsyncIterator[ProviderEvents]]:
    """The adapter's stream of batches for a body that arrives in `reads`."""

    class Reads(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for read in reads:
                yield read

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Reads())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        config = OpenAIProviderConfig(kind="openai", base_url="http://upstream/v1")
        async with aclosing(OpenAICompatProvider("p", config, client, {}).stream(REQUEST)) as s:
            yield s


async def test_the_events_of_one_read_come_as_one_batch() -> None:
    usage = sse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    reads = [text_chunk("a"), text_chunk("b") + text_chunk("c") + usage + b"data: [DONE]\n\n"]
    async with streamed(reads) as stream:
        batches = [list(batch) async for batch in stream]
    assert batches[:2] == [[TextDelta("a")], [TextDelta("b"), TextDelta("c")]]
    (end,) = batches[2]
    assert isinstance(end, StreamEnd) and end.usage == Usage(5, 0, 0, 3)
    assert len(batches) == 3


async def test_an_error_in_a_read_comes_after_the_deltas_before_it() -> None:
    error = sse({"error": {"message": "overloaded", "type": "server_error"}})
    async with streamed([text_chunk("a") + text_chunk("b") + error]) as stream:
        # The deltas before the error are handed on first (they commit the call to this
        # target, as if they had come in a read of their own); then the error.
        assert list(await anext(stream)) == [TextDelta("a"), TextDelta("b")]
        with pytest.raises(ProviderError, match="server_error"):
            await anext(stream)


async def test_an_empty_data_field_does_not_fail_the_stream() -> None:
    reads = [b"data:\n\n", text_chunk("a"), b"data: \n\n" + text_chunk("b") + b"data: [DONE]\n\n"]
    async with streamed(reads) as stream:
        events = [event async for batch in stream for event in batch]
    assert events[:2] == [TextDelta("a"), TextDelta("b")]
    assert isinstance(events[2], StreamEnd)


async def test_a_rate_limit_error_before_the_first_token_is_a_429() -> None:
    error = {
        "message": "Rate limit reached for requests. Please try again in 20ms.",
        "type": "requests",
        "code": "rate_limit_exceeded",
    }
    async with streamed([sse({"error": error})]) as stream:
        with pytest.raises(ProviderRateLimited) as caught:
            await anext(stream)
    assert caught.value.status == 429
    assert caught.value.retry_after_s == pytest.approx(0.02)
    assert "(rate_limit_exceeded)" in caught.value.message
