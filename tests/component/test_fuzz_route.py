"""Whatever a caller sends, `Route`, `Explain`, `Feedback` and the Admin calls answer with a
status the contract names.

Hypothesis builds arbitrary `RouteRequest`s (odd roles and tasks, tool schemas as JSON text or
Structs with out-of-range numbers, tool calls, hints with unknown enum values, extreme limits)
and sends them to a real server over gRPC whose providers are the fake OpenAI-compatible and
Anthropic servers on loopback (so every request is encoded as those APIs want it). Each must
end with a `done` or with a defined refusal; never `UNKNOWN` or `INTERNAL`, and the server
logs no unexpected error. Validation alone is tested in `tests/unit/test_validation.py`;
this goes through the whole pipeline, where a value validation let through can still break
the provider request (a number beyond a double in a tool schema once did).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from router_service._proto import router_pb2 as pb
from router_service._proto import router_pb2_grpc
from tests.support.configs import ADMIN_KEY, DEMO_KEY
from tests.support.fake_provider import FakeProvider
from tests.support.provider_configs import environ, mixed_config
from tests.support.servers import auth, running_router

# What a caller may meet: a refusal of its request, a limit, or every provider failing.
DEFINED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}
MODELS = ["glm-5.2", "kimi-2.7", "gpt-5.5", "claude-opus-4.8"]


class _Errors(logging.Handler):
    """The server's error records (with a traceback: something nobody raised on purpose)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


class _Server:
    def __init__(self, target: str, errors: _Errors) -> None:
        self.channel = grpc.insecure_channel(target)
        self.router = router_pb2_grpc.RouterStub(self.channel)
        self.admin = router_pb2_grpc.AdminStub(self.channel)
        self.errors = errors


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    """One router (and fake provider) for every example, on its own event loop in a thread."""
    config = mixed_config(
        apps={"demo": {"budget": {"monthly_limit_usd": 1_000_000}}},
        call_log={"directory": str(tmp_path_factory.mktemp("calllog"))},
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        state["stop"] = asyncio.Event()
        fake = FakeProvider()
        async with fake, running_router(config, environ=environ(fake.url)) as running:
            state["target"] = running.target
            ready.set()
            await state["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the router did not start"
    errors = _Errors()
    logging.getLogger("router_service").addHandler(errors)
    running = _Server(state["target"], errors)
    try:
        yield running
    finally:
        logging.getLogger("router_service").removeHandler(errors)
        running.channel.close()
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        loop.close()


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_wild_json = st.one_of(
    _json_values.map(json.dumps),
    st.sampled_from(['{"x": 1e400}', '{"x": -1e999}', '{"x": NaN}', "[]", "{", "", "null"]),
    st.text(max_size=40),
)
_object_json = st.dictionaries(st.text(max_size=8), _json_values, max_size=4).map(json.dumps)


def _mostly(draw: st.DrawFn, normal: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
    """Usually a value a well-behaved caller sends, one time in eight anything at all: many
    requests then get past validation, into routing and the provider call."""
    return draw(wild if draw(st.integers(0, 7)) == 0 else normal)


@st.composite
def _schema(draw: st.DrawFn) -> dict[str, Any]:
    properties = draw(
        st.dictionaries(
            st.sampled_from(["q", "amount", "mode"]),
            st.fixed_dictionaries(
                {"type": st.sampled_from(["string", "number"])},
                optional={
                    "enum": st.lists(st.text(max_size=6), max_size=3),
                    "maximum": st.floats(allow_nan=False, allow_infinity=False),
                    "description": st.text(max_size=20),
                },
            ),
            max_size=3,
        )
    )
    return {"type": "object", "properties": properties}


@st.composite
def _tools(draw: st.DrawFn) -> pb.Tool:
    tool = pb.Tool(
        name=_mostly(draw, st.sampled_from(["lookup", "refund"]), st.text(max_size=12)),
        description=draw(st.text(max_size=40)),
    )
    kind = draw(st.sampled_from(["none", "json", "struct"]))
    if kind == "json":
        tool.parameters_json = _mostly(draw, _schema().map(json.dumps), _wild_json)
    elif kind == "struct":
        wild = st.dictionaries(
            st.text(max_size=8),
            st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10),
            max_size=4,
        )
        tool.parameters_struct.update(_mostly(draw, _schema(), wild))
    return tool


@st.composite
def _messages(draw: st.DrawFn) -> list[pb.Message]:
    messages = []
    if draw(st.booleans()):
        messages.append(pb.Message(role="system", content=draw(st.text(min_size=1, max_size=120))))
    messages.append(pb.Message(role="user", content=draw(st.text(min_size=1, max_size=200))))
    if draw(st.integers(0, 3)) == 0:  # a tool round trip
        call = pb.ToolCall(
            id=_mostly(draw, st.just("c1"), st.text(max_size=8)),
            name="lookup",
            arguments_json=_mostly(draw, _object_json, _wild_json),
        )
        messages += [
            pb.Message(role="assistant", tool_calls=[call]),
            pb.Message(
                role="tool",
                tool_call_id=_mostly(draw, st.just("c1"), st.text(max_size=8)),
                content=draw(st.text(max_size=40)),
            ),
            pb.Message(role="user", content="And then?"),
        ]
    if draw(st.integers(0, 4)) == 0:  # anything at all, somewhere
        odd = pb.Message(
            role=draw(st.sampled_from(["assistant", "developer", "tool"]) | st.text(max_size=8)),
            content=draw(st.text(max_size=60)),
            tool_call_id=draw(st.text(max_size=4)),
        )
        messages.insert(draw(st.integers(0, len(messages))), odd)
    return messages


@st.composite
def route_requests(draw: st.DrawFn) -> pb.RouteRequest:
    request = pb.RouteRequest(
        task=_mostly(
            draw,
            st.sampled_from(["summarization", "code_review", "unknown_task"]),
            st.text(max_size=20),
        ),
        messages=draw(_messages()),
        tools=draw(st.lists(_tools(), max_size=2, unique_by=lambda t: t.name)),
        max_output_tokens=_mostly(draw, st.integers(0, 300), st.integers(-(2**31), 2**31 - 1)),
        hints=pb.RouteHints(
            tier=_mostly(draw, st.integers(0, 3), st.integers(-2, 8)),
            force_model=_mostly(draw, st.sampled_from(["", "", "", *MODELS]), st.text(max_size=16)),
            money_movement=draw(st.booleans()),
            customer_escalation=draw(st.booleans()),
            response_cache=draw(st.booleans()),
        ),
        request_id=_mostly(draw, st.sampled_from(["", "req-1"]), st.text(max_size=20)),
        metadata=draw(
            st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=2)
        ),
    )
    if draw(st.booleans()):
        request.temperature = _mostly(
            draw, st.floats(0, 2), st.floats(allow_nan=True, allow_infinity=True)
        )
    return request


def _status(call: Any) -> grpc.StatusCode:
    """The call's status: OK only after exactly one `done` came last."""
    try:
        events = list(call)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds and kinds[0] == "decision" and kinds[-1] == "done" and kinds.count("done") == 1
    return grpc.StatusCode.OK


def _regression(tool: pb.Tool) -> pb.RouteRequest:
    """A valid request but for `tool`: what once passed validation and broke the call."""
    return pb.RouteRequest(
        task="summarization",
        messages=[pb.Message(role="user", content="Summarize the report.")],
        tools=[tool],
        max_output_tokens=20,
    )


_NAN_STRUCT = pb.Tool(name="lookup")
_NAN_STRUCT.parameters_struct.update({"type": "number", "maximum": float("nan")})


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=route_requests())
@example(request=_regression(pb.Tool(name="lookup", parameters_json='{"maximum": 1e400}')))
@example(request=_regression(_NAN_STRUCT))
def test_any_request_gets_a_defined_answer(server: _Server, request: pb.RouteRequest) -> None:
    metadata = auth(DEMO_KEY)
    routed = _status(server.router.Route(request, metadata=metadata, timeout=20))
    event(f"Route: {routed.name}")
    assert routed is grpc.StatusCode.OK or routed in DEFINED, routed
    try:
        server.router.Explain(request, metadata=metadata, timeout=20)
        explained = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        explained = exc.code()
    assert explained is grpc.StatusCode.OK or explained in DEFINED, explained
    assert not server.errors.records, server.errors.records[0].getMessage()


def _unary_status(call: Any, request: Any, key: str) -> grpc.StatusCode:
    try:
        call(request, metadata=auth(key), timeout=20)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


_money = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1e4)
# Apps the admin calls may name: never `demo`, whose budget the Route examples spend.
_apps = st.sampled_from(["", "nosuchapp"]) | st.text(max_size=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    budget=st.builds(
        pb.SetBudgetRequest, app_id=_apps, monthly_limit_usd=_money, soft_threshold=_money
    ),
    feedback=st.builds(
        pb.FeedbackRequest,
        request_id=st.sampled_from(["req-1", ""]) | st.text(max_size=140),
        score=st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1),
        label=st.text(max_size=140),
        comment=st.text(max_size=200),
    ),
    app=_apps,
    path=st.sampled_from(["", "/nonexistent", "/"]) | st.text(max_size=30),
)
def test_admin_and_feedback_calls_get_defined_answers(
    server: _Server,
    budget: pb.SetBudgetRequest,
    feedback: pb.FeedbackRequest,
    app: str,
    path: str,
) -> None:
    admin = server.admin
    allowed = {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
    calls = [
        (admin.SetBudget, budget),
        (admin.GetBudget, pb.GetBudgetRequest(app_id=app)),
        (admin.GetStats, pb.GetStatsRequest(app_id=app)),
        (admin.ReloadClassifier, pb.ReloadClassifierRequest(path=path)),
        (admin.ListModels, pb.ListModelsRequest()),
        (admin.GetClassifier, pb.GetClassifierRequest()),
    ]
    for call, request in calls:
        code = _unary_status(call, request, ADMIN_KEY)
        assert code in allowed, (type(request).__name__, code)
    code = _unary_status(server.router.Feedback, feedback, DEMO_KEY)
    assert code in allowed, ("Feedback", code)
    assert not server.errors.records, server.errors.records[0].getMessage()
