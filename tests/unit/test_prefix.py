from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from router_service.chat import ChatMessage, ChatRequest, ToolSpec
from router_service.prefix import canonicalize, normalize_text

TOOLS = (
    ToolSpec(
        "search", "Search the catalog.", {"type": "object", "properties": {"q": {"type": "string"}}}
    ),
    ToolSpec(
        "refund",
        "Issue a refund.",
        {"properties": {"amount": {"type": "number"}}, "type": "object"},
    ),
)


def chat(tools: tuple[ToolSpec, ...], system: str) -> ChatRequest:
    return ChatRequest(
        request_id="r",
        task="support_draft",
        messages=(ChatMessage("system", system), ChatMessage("user", "Where is my order?")),
        tools=tools,
    )


def test_same_logical_prefix_same_hash() -> None:
    a = canonicalize(chat(TOOLS, "You are a support agent.\nBe brief."))
    reordered = tuple(
        ToolSpec(t.name, t.description + "  ", dict(reversed(list(t.parameters.items()))))
        for t in reversed(TOOLS)
    )
    b = canonicalize(chat(reordered, "You are a support agent.   \r\nBe brief.\n\n\n"))
    assert a.prefix_hash == b.prefix_hash
    assert a.request.tools == b.request.tools
    assert a.request.messages[0] == b.request.messages[0]


def test_different_prefix_different_hash() -> None:
    a = canonicalize(chat(TOOLS, "You are a support agent."))
    b = canonicalize(chat(TOOLS, "You are a sales agent."))
    assert a.prefix_hash != b.prefix_hash


def test_no_prefix_no_hash() -> None:
    request = ChatRequest("r", "t", (ChatMessage("user", "hi"),))
    assert canonicalize(request).prefix_hash == ""


def test_user_messages_are_untouched() -> None:
    request = ChatRequest("r", "t", (ChatMessage("user", "  spaced   \n\n\n\nout  "),))
    assert canonicalize(request).request.messages == request.messages


@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    assert normalize_text(normalize_text(text)) == normalize_text(text)


@given(
    st.lists(st.sampled_from(TOOLS), min_size=1, max_size=2, unique_by=lambda t: t.name),
    st.randoms(),
)
def test_tool_order_never_matters(tools: list[ToolSpec], rnd: random.Random) -> None:
    shuffled = list(tools)
    rnd.shuffle(shuffled)
    assert (
        canonicalize(chat(tuple(tools), "s")).prefix_hash
        == canonicalize(chat(tuple(shuffled), "s")).prefix_hash
    )


def test_schema_values_are_kept_byte_for_byte_and_only_prose_is_normalized() -> None:
    schema = {
        "type": "object",
        "description": "  The speed.  \n\n\n",
        "properties": {
            "speed": {"enum": ["fast ", "fast", " slow"], "title": "Speed ", "default": " fast"},
            "code": {"type": "string", "pattern": "^[A-Z] +$", "examples": ["AB  "]},
        },
    }
    tool = canonicalize(chat((ToolSpec("set", "Set it.", schema),), "s")).request.tools[0]
    speed = tool.parameters["properties"]["speed"]
    assert speed["enum"] == ["fast ", "fast", " slow"] and speed["default"] == " fast"
    assert speed["title"] == "Speed" and tool.parameters["description"] == "The speed."
    code = tool.parameters["properties"]["code"]
    assert code["pattern"] == "^[A-Z] +$" and code["examples"] == ["AB  "]
