"""Token estimates and the bound budgets reserve against."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router_service.chat import ChatMessage, ChatRequest, ToolCall, ToolSpec
from router_service.tokens import TextSize, estimate_tokens, measure_prompt

texts = st.text(max_size=300)


def test_estimates_follow_the_script() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a" * 400) == 100
    # CJK runs near one token per character, not a quarter of one.
    assert estimate_tokens("漢" * 100) >= 100


@given(st.lists(texts, max_size=10))
def test_streamed_size_matches_the_whole_texts_estimate(pieces: list[str]) -> None:
    size = TextSize()
    for piece in pieces:
        size.add(piece)
    assert abs(size.tokens - estimate_tokens("".join(pieces))) <= 1


@given(
    st.lists(
        st.tuples(st.sampled_from(["system", "user", "assistant", "tool"]), texts), min_size=1
    ),
    st.lists(st.tuples(texts, texts, texts), max_size=3),
    st.booleans(),
)
def test_the_bound_covers_every_byte_sent_and_the_estimate(
    messages: list[tuple[str, str]], calls: list[tuple[str, str, str]], tools: bool
) -> None:
    request = ChatRequest(
        request_id="r",
        task="t",
        messages=(
            *(ChatMessage(role, content, tool_call_id=content[:8]) for role, content in messages),
            ChatMessage("assistant", "", tool_calls=tuple(ToolCall(*c) for c in calls)),
        ),
        tools=(ToolSpec("lookup", "Find things.", {"type": "object"}),) if tools else (),
    )
    size = measure_prompt(request)
    sent = sum(
        len(s.encode())
        for m in request.messages
        for s in (
            m.role,
            m.content,
            m.tool_call_id,
            *(x for c in m.tool_calls for x in (c.id, c.name, c.arguments_json)),
        )
    )
    assert size.bound >= sent
    assert size.bound >= size.estimate
    if tools:
        # Room for the tool-use system prompt providers add (Anthropic's: about 350 tokens).
        assert size.bound >= sent + 350
