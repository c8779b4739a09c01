"""The Anthropic Messages wire format: bodies, cache markers, events and usage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_service.chat import ChatMessage, ToolCall, ToolSpec
from router_service.config import AnthropicProviderConfig
from router_service.cost import Usage
from router_service.providers.anthropic import (
    EventParser,
    finish_reason,
    parse_message,
    request_body,
    usage_of,
)
from router_service.providers.base import (
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from router_service.providers.errors import UpstreamErrorEvent
from router_service.providers.sse import SSEDecoder

GOLDEN = (
    Path(__file__).parent.parent
    / "fixtures"
    / "providers"
    / "anthropic_stream_cache_read_write.sse"
)
LONG_SYSTEM = "You are a meticulous code reviewer. " * 150  # ~1,350 tokens
TOOL = ToolSpec("open_issue", "Open an issue.", {"type": "object", "properties": {}})


def request(
    system: str = LONG_SYSTEM,
    tools: tuple[ToolSpec, ...] = (TOOL,),
    messages: tuple[ChatMessage, ...] = (ChatMessage("user", "Review this diff."),),
    temperature: float | None = None,
) -> ProviderRequest:
    return ProviderRequest(
        model="claude-opus-4-8",
        messages=(ChatMessage("system", system), *messages),
        tools=tools,
        max_output_tokens=1024,
        temperature=temperature,
    )


def test_long_prefix_gets_a_cache_marker_at_its_end() -> None:
    body = request_body(request(), stream=True, cache_min_tokens=1024)
    assert body["system"] == [
        {"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}
    ]
    # The tools alone are far too short to be cached: no marker there.
    assert "cache_control" not in body["tools"][0]
    assert body["stream"] is True and body["max_tokens"] == 1024
    assert body["tools"][0]["input_schema"] == {"type": "object", "properties": {}}


def test_short_prefix_gets_no_marker() -> None:
    body = request_body(request(system="Be brief."), stream=False, cache_min_tokens=1024)
    assert "cache_control" not in json.dumps(body)
    assert "stream" not in body


def test_long_tools_get_their_own_marker() -> None:
    big = ToolSpec("search", "Search. " * 800, {"type": "object"})
    body = request_body(
        request(system="Be brief.", tools=(TOOL, big)), stream=True, cache_min_tokens=1024
    )
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][1]["cache_control"] == {"type": "ephemeral"}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        # Anthropic's published minimum cacheable prompt lengths.
        ("claude-haiku-4-5", 4096),
        ("claude-haiku-4-5-20251001", 4096),
        ("claude-opus-4-5-20251101", 4096),
        ("claude-opus-4-6", 4096),
        ("claude-opus-4-7", 4096),
        ("anthropic.claude-opus-4-6-v1", 4096),  # Bedrock's name
        ("claude-sonnet-4-6", 2048),
        ("claude-3-5-haiku-20241022", 2048),
        ("claude-3-haiku-20240307", 2048),
        # Everything else: cache_min_tokens.
        ("claude-sonnet-4-5", 1024),
        ("claude-sonnet-4-20250514", 1024),
        ("claude-opus-4-1-20250805", 1024),
        ("claude-opus-4-8", 1024),
    ],
)
def test_cache_minimum_per_model_defaults(model: str, minimum: int) -> None:
    assert AnthropicProviderConfig(kind="anthropic").cache_min_tokens_for(model) == minimum


def test_cache_minimum_per_model_family() -> None:
    custom = AnthropicProviderConfig(
        kind="anthropic", cache_min_tokens_by_model={"claude": 4096, "claude-opus": 1024}
    )
    assert custom.cache_min_tokens_for("claude-opus-4-8") == 1024  # the longest key wins
    assert custom.cache_min_tokens_for("claude-sonnet-4-6") == 4096


def test_conversation_turns() -> None:
    messages = (
        ChatMessage("user", "Find both files."),
        ChatMessage(
            "assistant",
            "Looking.",
            tool_calls=(
                ToolCall("toolu_1", "read", '{"path": "a.py"}'),
                ToolCall("toolu_2", "read", '{"path": "b.py"}'),
            ),
        ),
        ChatMessage("tool", "print('a')", tool_call_id="toolu_1"),
        ChatMessage("tool", "print('b')", tool_call_id="toolu_2"),
        ChatMessage("user", "Now compare them."),
    )
    body = request_body(
        request(messages=messages, temperature=1.7), stream=True, cache_min_tokens=0
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Find both files."}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.py"}},
                {"type": "tool_use", "id": "toolu_2", "name": "read", "input": {"path": "b.py"}},
            ],
        },
        # Parallel tool results and the next user text share one user turn.
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "print('a')"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "print('b')"},
                {"type": "text", "text": "Now compare them."},
            ],
        },
    ]
    assert body["temperature"] == 1.0  # Anthropic's range ends at 1


def event(kind: str, **fields: Any) -> bytes:
    return json.dumps({"type": kind, **fields}).encode()


def test_usage_split_over_start_and_delta_is_not_double_counted() -> None:
    parser = EventParser(request())
    start_usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
    }
    reported = parser.feed(
        event("message_start", message={"model": "claude-opus-4-8", "usage": start_usage})
    )
    assert reported == (UsageReport(Usage(2010, 0, 2000, 1)),)
    parser.feed(event("content_block_start", index=0, content_block={"type": "text", "text": ""}))
    assert not parser.started
    parser.feed(event("ping"))
    assert parser.feed(
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi"})
    ) == (TextDelta("Hi"),)
    assert parser.started
    # Newer API versions repeat the input fields, cumulatively.
    delta_usage = {**start_usage, "output_tokens": 42}
    parser.feed(event("message_delta", delta={"stop_reason": "max_tokens"}, usage=delta_usage))
    parser.feed(event("message_stop"))
    assert parser.done
    assert parser.end() == StreamEnd("length", Usage(2010, 0, 2000, 42), "claude-opus-4-8")


def test_delta_usage_replaces_a_deviant_start() -> None:
    # Some Anthropic-compatible hosts send a cache-inclusive count at the start and the real
    # split only in message_delta: the later numbers win.
    parser = EventParser(request())
    parser.feed(
        event(
            "message_start",
            message={"model": "m", "usage": {"input_tokens": 8834, "output_tokens": 0}},
        )
    )
    parser.feed(
        event(
            "message_delta",
            delta={"stop_reason": "end_turn"},
            usage={
                "input_tokens": 18,
                "cache_read_input_tokens": 8831,
                "cache_creation_input_tokens": 0,
                "output_tokens": 426,
            },
        )
    )
    assert parser.end().usage == Usage(8849, 8831, 0, 426)


def test_tool_calls_are_numbered_among_tool_calls() -> None:
    parser = EventParser(request())
    parser.feed(event("content_block_start", index=0, content_block={"type": "text", "text": ""}))
    block = {"type": "tool_use", "id": "toolu_9", "name": "open_issue", "input": {}}
    assert parser.feed(event("content_block_start", index=1, content_block=block)) == (
        ToolCallDelta(0, "toolu_9", "open_issue", ""),
    )
    assert parser.feed(
        event(
            "content_block_delta",
            index=1,
            delta={"type": "input_json_delta", "partial_json": '{"a"'},
        )
    ) == (ToolCallDelta(0, "", "", '{"a"'),)


def test_thinking_is_the_first_token_but_not_answer() -> None:
    parser = EventParser(request())
    parser.feed(
        event("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""})
    )
    assert (
        parser.feed(
            event(
                "content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "Hmm"}
            )
        )
        == ()
    )
    assert parser.started


def tool_use_stream(index: int, *fragments: str, stop: bool = True) -> list[bytes]:
    """The events of one streamed tool_use block, its input in `fragments`."""
    block = {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}
    events = [event("content_block_start", index=index, content_block=block)]
    events += [
        event(
            "content_block_delta",
            index=index,
            delta={"type": "input_json_delta", "partial_json": fragment},
        )
        for fragment in fragments
    ]
    return events + ([event("content_block_stop", index=index)] if stop else [])


def streamed_arguments(events: list[bytes]) -> str:
    parser = EventParser(request())
    arguments = ""
    for data in events:
        for item in parser.feed(data):
            if isinstance(item, ToolCallDelta):
                assert item.index == 0
                arguments += item.arguments_fragment
    return arguments


def whole_arguments(tool_input: dict[str, Any]) -> str:
    block = {"type": "tool_use", "id": "toolu_1", "name": "now", "input": tool_input}
    body = {"content": [block], "stop_reason": "tool_use", "usage": {}}
    (call, _end) = parse_message(body, request())
    assert isinstance(call, ToolCallDelta)
    return call.arguments_fragment


@pytest.mark.parametrize("fragments", [(), ("",), ("", ""), (" ",)])
def test_a_streamed_tool_call_without_input_has_an_empty_object(fragments: tuple[str]) -> None:
    arguments = streamed_arguments(tool_use_stream(1, *fragments))
    assert json.loads(arguments) == {} == json.loads(whole_arguments({}))


def test_a_tool_call_left_open_at_message_stop_gets_an_empty_object_too() -> None:
    events = [*tool_use_stream(0, stop=False), event("message_stop")]
    assert streamed_arguments(events) == "{}"


@given(
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8)), max_size=4),
    st.lists(st.integers(0, 200), max_size=6),
)
def test_streamed_tool_arguments_match_the_whole_message(
    tool_input: dict[str, Any], cuts: list[int]
) -> None:
    """Any input, streamed in any pieces (empty ones included), gives arguments that parse to
    the input, as a whole message's do; one that did stream JSON is passed on unchanged."""
    encoded = json.dumps(tool_input) if tool_input else ""
    points = sorted(c % (len(encoded) + 1) for c in cuts)
    fragments = [encoded[a:b] for a, b in zip([0, *points], [*points, len(encoded)], strict=True)]
    arguments = streamed_arguments(tool_use_stream(2, *fragments))
    assert json.loads(arguments) == tool_input == json.loads(whole_arguments(tool_input))
    if tool_input:
        assert arguments == encoded


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
        # No OpenAI counterpart: passed on as Anthropic names it.
        ("pause_turn", "pause_turn"),
        ("a_reason_added_later", "a_reason_added_later"),
    ],
)
def test_stop_reasons(stop_reason: str | None, expected: str) -> None:
    assert finish_reason(stop_reason) == expected
    parser = EventParser(request())
    parser.feed(event("message_delta", delta={"stop_reason": stop_reason}, usage={}))
    assert parser.end().finish_reason == expected


def test_an_error_event_raises() -> None:
    with pytest.raises(UpstreamErrorEvent) as caught:
        EventParser(request()).feed(
            event("error", error={"type": "overloaded_error", "message": "Overloaded"})
        )
    assert caught.value.error_type == "overloaded_error"


def test_usage_of_tolerates_nulls() -> None:
    assert usage_of(
        {"input_tokens": 5, "cache_read_input_tokens": None, "output_tokens": 2}
    ) == Usage(5, 0, 0, 2)


@given(st.lists(st.integers(0, 3000), max_size=20))
def test_a_golden_stream_split_anywhere_parses_the_same(cuts: list[int]) -> None:
    data = GOLDEN.read_bytes()
    points = sorted({c % (len(data) + 1) for c in cuts})
    decoder, parser, text, arguments = SSEDecoder(), EventParser(request()), "", ""
    for a, b in zip([0, *points], [*points, len(data)], strict=True):
        for sse in decoder.feed(data[a:b]):
            for item in parser.feed(sse.data):
                if isinstance(item, TextDelta):
                    text += item.text
                elif isinstance(item, ToolCallDelta):
                    arguments += item.arguments_fragment
    assert parser.done
    assert text == "The diff introduces a race: `counter += 1` is not atomic."
    assert json.loads(arguments) == {"title": "Race in counter"}
    assert parser.end().usage == Usage(3678, 3145, 512, 87)
