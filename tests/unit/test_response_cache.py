"""The response cache: who is eligible, what the key covers, and the stored format."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from router_service.auth import App
from router_service.chat import ChatMessage, ChatRequest, Hints, TierPreference
from router_service.config import AppConfig
from router_service.providers.base import TextDelta, ToolCallDelta
from router_service.response_cache import AnswerRecorder, CachedAnswer, cache_key, eligible

REQUEST = ChatRequest(
    request_id="r1",
    task="classification",
    messages=(
        ChatMessage("system", "Label the ticket."),
        ChatMessage("user", "My card was charged twice."),
    ),
    temperature=0.0,
)


def app(opt_in: bool) -> App:
    return App("a", AppConfig(key_sha256="0" * 64, response_cache=opt_in), tasks={})


def test_only_temperature_zero_and_opted_in_requests_are_eligible() -> None:
    assert eligible(app(True), REQUEST)
    assert not eligible(app(False), REQUEST)
    assert eligible(app(False), replace(REQUEST, hints=Hints(response_cache=True)))
    assert not eligible(app(True), replace(REQUEST, temperature=None))
    assert not eligible(app(True), replace(REQUEST, temperature=0.3))


def test_key_ignores_the_request_id_but_not_what_shapes_the_answer() -> None:
    key = cache_key(REQUEST, 256)
    assert cache_key(replace(REQUEST, request_id="other"), 256) == key
    assert cache_key(REQUEST, 512) != key
    assert cache_key(replace(REQUEST, task="extraction"), 256) != key
    assert cache_key(replace(REQUEST, hints=Hints(tier=TierPreference.FRONTIER)), 256) != key
    changed = (REQUEST.messages[0], ChatMessage("user", "My card was charged twice!"))
    assert cache_key(replace(REQUEST, messages=changed), 256) != key


events = st.lists(
    st.one_of(
        st.builds(TextDelta, st.text()),
        st.builds(ToolCallDelta, st.integers(0, 5), st.text(), st.text(), st.text()),
    ),
    max_size=20,
)


@given(events, st.text(), st.text(), st.text())
def test_answers_survive_encoding(
    answer_events: list[TextDelta | ToolCallDelta], finish: str, model: str, provider: str
) -> None:
    answer = CachedAnswer(tuple(answer_events), finish, model, provider)
    assert CachedAnswer.decode(answer.encode()) == answer


@given(st.binary(max_size=200))
def test_damaged_entries_read_as_misses(data: bytes) -> None:
    decoded = CachedAnswer.decode(data)
    assert decoded is None or isinstance(decoded, CachedAnswer)


def test_entries_of_another_format_read_as_misses() -> None:
    assert CachedAnswer.decode(b'{"v": 2, "f": "stop", "m": "x", "p": "y", "e": []}') is None


def test_recorder_merges_text_around_tool_calls() -> None:
    recorder = AnswerRecorder()
    for event in (
        TextDelta("Hel"),
        TextDelta("lo"),
        ToolCallDelta(0, "c1", "lookup", '{"id":'),
        TextDelta(" done"),
    ):
        recorder.add(event)
    answer = recorder.answer("stop", "glm-5.2", "sim-openai")
    assert answer is not None
    assert answer.events == (
        TextDelta("Hello"),
        ToolCallDelta(0, "c1", "lookup", '{"id":'),
        TextDelta(" done"),
    )


def test_recorder_gives_up_on_huge_answers() -> None:
    recorder = AnswerRecorder()
    for _ in range(300):
        recorder.add(TextDelta("x" * 4096))
    assert recorder.answer("stop", "m", "p") is None
