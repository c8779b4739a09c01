"""Spans of Route, Explain and Feedback over real gRPC, read from an in-memory exporter."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import grpc
import httpx
import pytest
from grpc import aio
from opentelemetry.trace import SpanKind, StatusCode

from router_service._proto import router_pb2 as pb
from router_service.chat import ChatMessage, ChatRequest
from router_service.pipeline import Pipeline
from router_service.policy import Classification
from router_service.providers.registry import build_providers
from router_service.server import RouterServer
from router_service.telemetry import NO_TRACE, Tracing
from router_service.telemetry import attributes as a
from router_service.telemetry import metrics as m
from tests.component.test_route_api import route_request
from tests.support.configs import DEMO_KEY, fast_config
from tests.support.servers import Running, auth, running_router
from tests.support.telemetry import Recorded

TRACE_ID = "0af7651916cd43dd8448eb211c96f319"
PARENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
ROUTE = "router.v1.Router/Route"
SECRET_PROMPT = "Summarize the confidential merger memo for Project Falcon."


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    telemetry = Recorded()
    yield telemetry
    telemetry.shutdown()


async def route(
    running: Running, request: pb.RouteRequest, *extra: tuple[str, str]
) -> pb.RouteSummary:
    events = [
        e async for e in running.router.Route(request, metadata=auth(DEMO_KEY) + tuple(extra))
    ]
    return events[-1].done


async def test_a_route_continues_the_callers_trace_with_genai_spans(recorded: Recorded) -> None:
    async with running_router(fast_config(), tracer_provider=recorded.tracer_provider) as running:
        request = route_request(
            messages=[pb.Message(role="user", content=SECRET_PROMPT)], request_id="trace-1"
        )
        done = await route(running, request, ("traceparent", TRACEPARENT))
    server = recorded.span(ROUTE)
    provider = recorded.span("chat glm-5.2")
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_SPAN_ID
    assert server.kind is SpanKind.SERVER
    assert provider.context.trace_id == server.context.trace_id
    assert provider.parent is not None and provider.parent.span_id == server.context.span_id
    assert provider.kind is SpanKind.CLIENT
    attrs = provider.attributes or {}
    assert attrs[a.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[a.GEN_AI_PROVIDER_NAME] == "sim-openai"
    assert attrs[a.GEN_AI_REQUEST_MODEL] == "glm-5.2"
    assert attrs[a.GEN_AI_RESPONSE_MODEL] == "glm-5.2"
    assert attrs[a.GEN_AI_USAGE_INPUT_TOKENS] == done.usage.input_tokens
    assert attrs[a.GEN_AI_USAGE_OUTPUT_TOKENS] == done.usage.output_tokens
    assert attrs[a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == done.usage.cached_input_tokens
    assert attrs[a.COST_USD] == done.cost_usd > 0
    # The provider span lies within the server span.
    assert server.start_time is not None and provider.start_time is not None
    assert server.end_time is not None and provider.end_time is not None
    assert server.start_time <= provider.start_time <= provider.end_time <= server.end_time
    ours = server.attributes or {}
    assert ours[a.APP] == "demo"
    assert ours[a.TASK] == "summarization"
    assert ours[a.TIER] == "cheap"
    assert ours[a.ARM] == "policy"
    assert ours[a.COST_USD] == done.cost_usd
    assert ours[a.REQUEST_ID] == "trace-1"
    assert ours[a.SERVED_FROM_CACHE] is False
    assert ours[a.PROMPT_CACHE_HIT] is False
    assert ours[a.OVERHEAD_MS] > 0
    for span in recorded.spans():
        for value in (span.attributes or {}).values():
            assert "Falcon" not in str(value) and DEMO_KEY not in str(value)


async def test_without_traceparent_a_new_trace_starts(recorded: Recorded) -> None:
    async with running_router(fast_config(), tracer_provider=recorded.tracer_provider) as running:
        await route(running, route_request())
    server = recorded.span(ROUTE)
    assert server.parent is None
    assert format(server.context.trace_id, "032x") != TRACE_ID


async def test_each_fallback_attempt_is_its_own_client_span(recorded: Recorded) -> None:
    config = fast_config(
        providers={"sim-openai": {"failure": {"rate": 1.0}}},
        models={"kimi-2.7": {"fallbacks": ["claude-opus-4.8"]}},
    )
    async with running_router(config, tracer_provider=recorded.tracer_provider) as running:
        request = route_request(hints=pb.RouteHints(tier=pb.TIER_PREFERENCE_CHEAP))
        done = await route(running, request)
    chats = sorted(
        (s for s in recorded.spans() if s.name.startswith("chat ")),
        key=lambda s: s.start_time or 0,
    )
    assert [s.name for s in chats] == ["chat glm-5.2", "chat kimi-2.7", "chat claude-opus-4.8"]
    for failed in chats[:2]:
        assert failed.status.status_code is StatusCode.ERROR
        assert "503" in (failed.status.description or "")
        assert (failed.attributes or {})[a.COST_USD] == 0.0
    served = chats[-1]
    assert served.status.status_code is StatusCode.UNSET
    assert (served.attributes or {})[a.COST_USD] == done.cost_usd
    assert (served.attributes or {})[a.GEN_AI_PROVIDER_NAME] == "sim-anthropic"
    # Attempts follow one another.
    for before, after in itertools.pairwise(chats):
        assert before.end_time is not None and after.start_time is not None
        assert before.end_time <= after.start_time


async def test_genai_spans_and_metrics_name_the_model_asked_of_the_provider(
    recorded: Recorded,
) -> None:
    """`gen_ai.request.model` is the upstream name sent; the catalog's is `llm_router.model`."""
    config = fast_config(
        providers={"sim-openai": {"failure": {"rate": 1.0}}},
        models={
            "glm-5.2": {
                "provider": None,
                "deployments": [{"provider": "sim-openai", "upstream_model": "glm-5.2-0414"}],
            },
            "kimi-2.7": {"fallbacks": ["claude-opus-4.8"]},
            "claude-opus-4.8": {
                "provider": None,
                "deployments": [{"provider": "sim-anthropic", "upstream_model": "claude-opus-4-8"}],
            },
        },
    )
    async with running_router(
        config,
        tracer_provider=recorded.tracer_provider,
        meter_provider=recorded.meter_provider,
    ) as running:
        request = route_request(hints=pb.RouteHints(tier=pb.TIER_PREFERENCE_CHEAP))
        await route(running, request)
        tokens = recorded.points(m.TOKEN_USAGE)
        cost = recorded.points(m.COST)
    chats = sorted(
        (s for s in recorded.spans() if s.name.startswith("chat ")),
        key=lambda s: s.start_time or 0,
    )
    asked = [
        (s.name, (s.attributes or {})[a.GEN_AI_REQUEST_MODEL], (s.attributes or {})[a.MODEL])
        for s in chats
    ]
    assert asked == [
        ("chat glm-5.2-0414", "glm-5.2-0414", "glm-5.2"),
        ("chat kimi-2.7", "kimi-2.7", "kimi-2.7"),
        ("chat claude-opus-4-8", "claude-opus-4-8", "claude-opus-4.8"),
    ]
    assert (chats[-1].attributes or {})[a.GEN_AI_RESPONSE_MODEL] == "claude-opus-4-8"
    assert {(p.attributes[a.GEN_AI_REQUEST_MODEL], p.attributes[a.MODEL]) for p in tokens} == {
        ("claude-opus-4-8", "claude-opus-4.8")
    }
    assert [p.attributes[a.MODEL] for p in cost] == ["claude-opus-4.8"]


async def test_a_refused_route_has_an_error_status(recorded: Recorded) -> None:
    async with running_router(fast_config(), tracer_provider=recorded.tracer_provider) as running:
        with pytest.raises(aio.AioRpcError) as caught:
            await route(running, route_request(messages=[]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    server = recorded.span(ROUTE)
    assert server.status.status_code is StatusCode.ERROR
    attrs = server.attributes or {}
    assert attrs[a.RPC_GRPC_STATUS_CODE] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert attrs[a.ERROR_TYPE] == "InvalidRequest"
    assert not [s for s in recorded.spans() if s.name.startswith("chat ")]


async def test_a_stream_broken_mid_way_marks_the_provider_span(recorded: Recorded) -> None:
    config = fast_config(providers={"sim-openai": {"failure": {"rate": 1.0, "mode": "mid_stream"}}})
    async with running_router(config, tracer_provider=recorded.tracer_provider) as running:
        with pytest.raises(aio.AioRpcError):
            await route(running, route_request())
    provider = recorded.span("chat glm-5.2")
    assert provider.status.status_code is StatusCode.ERROR
    assert (provider.attributes or {})[a.ATTEMPT_OUTCOME] == "broken"
    assert (recorded.span(ROUTE).attributes or {})[a.STATUS] == "broken"


async def test_explain_has_a_span_and_calls_no_provider(recorded: Recorded) -> None:
    async with running_router(fast_config(), tracer_provider=recorded.tracer_provider) as running:
        await running.router.Explain(route_request(task="code_review"), metadata=auth(DEMO_KEY))
    (span,) = recorded.spans()
    assert span.name == "router.v1.Router/Explain"
    assert (span.attributes or {})[a.TIER] == "frontier"


async def test_with_tracing_off_every_call_gets_the_no_op_trace() -> None:
    async with running_router(fast_config()) as running:
        tracing = running.server.telemetry.tracing
        assert not tracing.enabled
        assert tracing.start_rpc("router.v1.Router", "Route", auth(DEMO_KEY)) is NO_TRACE
        done = await route(running, route_request(), ("traceparent", TRACEPARENT))
    assert done.cost_usd > 0


class FixedDifficulty:
    """A classifier at the pipeline's `DifficultySource` seam."""

    def classify(self, messages: Sequence[tuple[str, str]]) -> Classification | None:
        return Classification(score=0.82, version="fixed-1", recommended_threshold=0.5)


async def test_classification_is_a_child_span_of_the_rpc(recorded: Recorded) -> None:
    config = fast_config()
    server = RouterServer(config, environ={})
    async with httpx.AsyncClient() as client:
        providers = build_providers(config.providers, client)
    pipeline = Pipeline(catalog=server.catalog, providers=providers, difficulty=FixedDifficulty())
    (app,) = server.auth.apps
    tracing = Tracing(recorded.tracer_provider)
    trace = tracing.start_rpc("router.v1.Router", "Explain", ())
    chat = ChatRequest(
        request_id="c-1", task="support_draft", messages=(ChatMessage("user", "hi"),)
    )
    plan = await pipeline.plan(app, chat, trace=trace)
    trace.end()
    assert plan.decision.tier.value == "frontier"
    classify = recorded.span(a.SPAN_CLASSIFY)
    rpc = recorded.span("router.v1.Router/Explain")
    assert classify.parent is not None and classify.parent.span_id == rpc.context.span_id
    assert (classify.attributes or {})[a.DIFFICULTY] == 0.82
    assert (classify.attributes or {})[a.CLASSIFIER_VERSION] == "fixed-1"
