from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_service._proto import router_pb2 as pb
from router_service.api.validation import MAX_JSON_DEPTH, validate_route_request
from router_service.chat import TierPreference
from router_service.config import LimitsConfig
from router_service.errors import InvalidRequest

LIMITS = LimitsConfig()


def request(**changes: object) -> pb.RouteRequest:
    values: dict[str, object] = {
        "task": "summarization",
        "messages": [pb.Message(role="user", content="Summarize: the cat sat on the mat.")],
    }
    values.update(changes)
    return pb.RouteRequest(**values)  # type: ignore[arg-type]


def test_a_good_request() -> None:
    chat = validate_route_request(
        request(
            tools=[pb.Tool(name="lookup", parameters_json='{"type": "object"}')],
            hints=pb.RouteHints(tier=pb.TIER_PREFERENCE_CHEAP),
            temperature=0.0,
        ),
        LIMITS,
    )
    assert chat.task == "summarization"
    assert chat.messages[0].role == "user"
    assert chat.tools[0].parameters == {"type": "object"}
    assert chat.hints.tier is TierPreference.CHEAP
    assert chat.temperature == 0.0
    assert len(chat.request_id) == 32


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"messages": []}, "messages is empty"),
        ({"task": ""}, "task is empty"),
        ({"task": "has space"}, "task must be"),
        ({"messages": [pb.Message(role="robot", content="x")]}, "messages[0].role is 'robot'"),
        ({"messages": [pb.Message(role="system", content="x")]}, "no user message"),
        ({"messages": [pb.Message(role="user", content="")]}, "messages[0] has no content"),
        ({"max_output_tokens": -1}, "max_output_tokens is -1; it must be >= 0"),
        ({"max_output_tokens": 10**9}, "the limit is 65536"),
        ({"temperature": float("nan")}, "temperature is nan"),
        ({"temperature": 7.0}, "temperature is 7.0"),
        ({"hints": pb.RouteHints(tier=42)}, "hints.tier has unknown value 42"),  # type: ignore[arg-type]
        ({"tools": [pb.Tool(name="bad name")]}, "tools[0].name"),
        ({"tools": [pb.Tool(name="t", parameters_json="{")]}, "not valid JSON"),
        ({"tools": [pb.Tool(name="t", parameters_json="[]")]}, "must be a JSON object"),
        ({"request_id": "a b"}, "request_id must be"),
    ],
)
def test_bad_requests_say_what_is_wrong(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_route_request(request(**changes), LIMITS)
    assert message in caught.value.message


def test_size_limits() -> None:
    small = LimitsConfig(max_request_bytes=100, max_messages=2)
    with pytest.raises(InvalidRequest, match="the limit is 100 bytes"):
        validate_route_request(
            request(messages=[pb.Message(role="user", content="x" * 200)]), small
        )
    with pytest.raises(InvalidRequest, match="3 messages; the limit is 2"):
        validate_route_request(request(messages=[pb.Message(role="user", content="x")] * 3), small)


@given(
    task=st.text(max_size=200),
    role=st.text(max_size=20),
    content=st.text(max_size=200),
    max_output=st.integers(-(2**31), 2**31 - 1),
    temperature=st.floats(allow_nan=True, allow_infinity=True),
)
def test_arbitrary_input_is_accepted_or_refused_cleanly(
    task: str, role: str, content: str, max_output: int, temperature: float
) -> None:
    message = request(
        task=task,
        messages=[pb.Message(role=role, content=content)],
        max_output_tokens=max_output,
        temperature=temperature,
    )
    try:
        chat = validate_route_request(message, LIMITS)
    except InvalidRequest as exc:
        assert exc.message
    else:
        assert chat.task == task and 0 <= chat.max_output_tokens <= LIMITS.max_output_tokens


@pytest.mark.parametrize(
    "changes",
    [
        {"messages": [pb.Message(role="r" * 200_000, content="x")]},
        {"tools": [pb.Tool(name="n " * 100_000)]},
        {"hints": pb.RouteHints(force_model="m" * 200_000)},
    ],
)
def test_error_messages_stay_small_whatever_was_sent(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_route_request(request(**changes), LIMITS)
    assert len(caught.value.message) < 300


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def assistant_call(arguments: str) -> list[pb.Message]:
    call = pb.ToolCall(id="c1", name="lookup", arguments_json=arguments)
    return [
        pb.Message(role="user", content="Find order 7."),
        pb.Message(role="assistant", tool_calls=[call]),
        pb.Message(role="tool", tool_call_id="c1", content="shipped"),
    ]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 700, 5_000, 100_000])
def test_deeply_nested_json_is_refused_before_any_work(depth: int) -> None:
    for changes in (
        {"tools": [pb.Tool(name="t", parameters_json=nested(depth))]},
        {"messages": assistant_call(nested(depth))},
    ):
        with pytest.raises(InvalidRequest, match=f"nests deeper than {MAX_JSON_DEPTH} levels"):
            validate_route_request(request(**changes), LIMITS)
    validate_route_request(  # as deep as allowed
        request(tools=[pb.Tool(name="t", parameters_json=nested(MAX_JSON_DEPTH - 1))]), LIMITS
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("not json", "arguments_json is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"x": NaN}', "NaN is not JSON"),
    ],
)
def test_tool_call_arguments_are_checked_up_front(arguments: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validate_route_request(request(messages=assistant_call(arguments)), LIMITS)
    chat = validate_route_request(request(messages=assistant_call('{"id": 7}')), LIMITS)
    assert chat.messages[1].tool_calls[0].arguments_json == '{"id": 7}'


def test_nan_and_infinity_in_a_tool_schema_are_refused() -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        tool = pb.Tool(name="t", parameters_json=f'{{"x": {constant}}}')
        with pytest.raises(InvalidRequest, match="is not JSON"):
            validate_route_request(request(tools=[tool]), LIMITS)


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5e309"])
def test_numbers_beyond_a_double_are_refused_up_front(number: str) -> None:
    # They would parse as infinity, which no provider request can carry.
    tool = pb.Tool(name="t", parameters_json=f'{{"type": "number", "maximum": {number}}}')
    with pytest.raises(InvalidRequest, match="out of range"):
        validate_route_request(request(tools=[tool]), LIMITS)
    with pytest.raises(InvalidRequest, match="out of range"):
        validate_route_request(request(messages=assistant_call(f'{{"x": {number}}}')), LIMITS)
    fine = pb.Tool(name="t", parameters_json='{"type": "number", "maximum": 1e300}')
    validate_route_request(request(tools=[fine]), LIMITS)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_in_a_struct_schema_are_refused(number: float) -> None:
    tool = pb.Tool(name="t")
    tool.parameters_struct.update({"type": "number", "maximum": number})
    with pytest.raises(InvalidRequest, match=r"tools\[0\].parameters_struct is not JSON"):
        validate_route_request(request(tools=[tool]), LIMITS)
