"""The Router service over real gRPC, on the embedded defaults made fast."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from router_service._proto import router_pb2 as pb
from tests.support.configs import ADMIN_KEY, DEMO_KEY, fast_config
from tests.support.servers import Running, auth, running_router


def route_request(**changes: object) -> pb.RouteRequest:
    values: dict[str, object] = {
        "task": "summarization",
        "messages": [
            pb.Message(role="system", content="You summarize reports."),
            pb.Message(role="user", content="Summarize the quarterly report in three bullets."),
        ],
    }
    values.update(changes)
    return pb.RouteRequest(**values)  # type: ignore[arg-type]


async def events(
    running: Running, request: pb.RouteRequest, key: str = DEMO_KEY
) -> list[pb.RouteEvent]:
    return [e async for e in running.router.Route(request, metadata=auth(key))]


async def test_route_streams_decision_deltas_and_done() -> None:
    # A token every millisecond: each reaches the caller as it comes (a faster upstream's
    # tokens that arrive together are merged into fewer deltas).
    paced = {"ttft_ms": 0, "tokens_per_second": 1000}
    config = fast_config(providers={"sim-openai": paced})
    async with running_router(config) as router:
        got = await events(router, route_request())
    kinds = [e.WhichOneof("event") for e in got]
    assert kinds[0] == "decision" and kinds[-1] == "done"
    assert kinds.count("decision") == 1 and kinds.count("done") == 1
    assert kinds.count("delta") >= 10
    decision, done = got[0].decision, got[-1].done
    assert decision.model == "glm-5.2" and decision.tier == pb.TIER_CHEAP
    assert decision.reasons
    assert done.usage.input_tokens > 0 and done.usage.output_tokens >= kinds.count("delta")
    assert done.cost_usd > 0
    assert done.cost_micro_usd == round(done.cost_usd * 1e6)
    assert done.model == "glm-5.2"
    assert [a.outcome for a in done.attempts] == [pb.ATTEMPT_OUTCOME_SUCCEEDED]
    text = "".join(e.delta.text for e in got[1:-1])
    assert len(text.split()) == done.usage.output_tokens


async def test_cost_follows_catalog_prices(router: Running) -> None:
    done = (await events(router, route_request(max_output_tokens=40)))[-1].done
    # glm-5.2: $0.95 input, $1.40 output per million tokens; no cache hit on a short prompt.
    expected = done.usage.input_tokens * 0.95 + done.usage.output_tokens * 1.40
    assert done.cost_micro_usd == round(expected)
    assert done.usage.output_tokens == 40


async def test_explain_matches_route(router: Running) -> None:
    request = route_request(task="code_review")
    explained = await router.router.Explain(request, metadata=auth(DEMO_KEY))
    routed = (await events(router, request))[0].decision
    assert explained.model == routed.model == "gpt-5.5"
    assert explained.tier == pb.TIER_FRONTIER
    assert list(explained.reasons) == list(routed.reasons)


async def test_unknown_task_falls_back_to_default(router: Running) -> None:
    decision = await router.router.Explain(route_request(task="poetry"), metadata=auth(DEMO_KEY))
    assert decision.task == "default"
    assert "unknown: using the default class" in decision.reasons[0]


async def test_request_id_is_echoed(router: Running) -> None:
    got = await events(router, route_request(request_id="abc-123"))
    assert got[0].decision.request_id == "abc-123" == got[-1].done.request_id


@pytest.mark.parametrize("key", ["wrong-key", ""])
async def test_unknown_or_missing_key_is_unauthenticated(router: Running, key: str) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await events(router, route_request(), key=key)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"messages": []}, "messages is empty"),
        ({"messages": [pb.Message(role="wizard", content="hi")]}, "messages[0].role is 'wizard'"),
        ({"task": ""}, "task is empty"),
        ({"max_output_tokens": -5}, "max_output_tokens is -5"),
        ({"max_output_tokens": 2_000_000_000}, "the limit is 65536"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    router: Running, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await events(router, route_request(**changes))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_invalid_utf8_is_invalid_argument(router: Running) -> None:
    # A RouteRequest whose task (field 1, length-delimited) holds bytes that are not UTF-8.
    raw = b"\x0a\x02\xff\xfe"
    call = router.channel.unary_stream(
        "/router.v1.Router/Route",
        request_serializer=lambda b: b,
        response_deserializer=pb.RouteEvent.FromString,
    )
    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in call(raw, metadata=auth(DEMO_KEY)):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid UTF-8" in (caught.value.details() or "")


async def test_an_unexpected_error_is_internal_and_keeps_its_text_to_the_log(
    router: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from router_service.api import router_servicer

    def broken(*args: object) -> None:
        raise ValueError("sk-secret-in-an-exception")

    monkeypatch.setattr(router_servicer, "validate_route_request", broken)
    for call in (
        events(router, route_request()),
        router.router.Explain(route_request(), metadata=auth(DEMO_KEY)),
    ):
        with pytest.raises(aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert "internal error" in (caught.value.details() or "")
        assert "sk-secret" not in (caught.value.details() or "")
    assert "sk-secret-in-an-exception" in caplog.text


async def test_oversized_request_is_refused() -> None:
    config = fast_config(limits={"max_request_bytes": 10_000})
    async with running_router(config) as running:
        big = route_request(messages=[pb.Message(role="user", content="x" * 20_000)])
        with pytest.raises(aio.AioRpcError) as caught:
            await events(running, big)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        huge = route_request(messages=[pb.Message(role="user", content="x" * 200_000)])
        with pytest.raises(aio.AioRpcError) as caught:
            await events(running, huge)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_fallback_to_the_next_candidate() -> None:
    # The OpenAI-style simulator fails before its first token: glm-5.2 and kimi-2.7 fail, and
    # the request falls back to the configured fallback on the Anthropic-style simulator.
    config = fast_config(
        providers={"sim-openai": {"failure": {"rate": 1.0}}},
        models={"kimi-2.7": {"fallbacks": ["claude-opus-4.8"]}},
        tasks={"summarization": {"threshold": 1.0}},
    )
    async with running_router(config) as running:
        request = route_request(hints=pb.RouteHints(tier=pb.TIER_PREFERENCE_CHEAP))
        got = await events(running, request)
        done = got[-1].done
        assert got[0].decision.candidates[-1] == "claude-opus-4.8"
        assert done.model == "claude-opus-4.8"
        assert [a.outcome for a in done.attempts][-1] == pb.ATTEMPT_OUTCOME_SUCCEEDED
        assert [a.outcome for a in done.attempts][:-1] == [pb.ATTEMPT_OUTCOME_FAILED] * (
            len(done.attempts) - 1
        )
        assert "503" in done.attempts[0].error


async def test_every_candidate_failing_is_unavailable() -> None:
    failing = {"failure": {"rate": 1.0}}
    config = fast_config(providers={"sim-openai": failing, "sim-anthropic": failing})
    async with running_router(config) as running:
        with pytest.raises(aio.AioRpcError) as caught:
            await events(running, route_request())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "every candidate failed" in (caught.value.details() or "")


async def test_stream_broken_mid_way_is_unavailable_after_deltas() -> None:
    config = fast_config(providers={"sim-openai": {"failure": {"rate": 1.0, "mode": "mid_stream"}}})
    async with running_router(config) as running:
        seen: list[str] = []
        with pytest.raises(aio.AioRpcError) as caught:
            async for event in running.router.Route(route_request(), metadata=auth(DEMO_KEY)):
                seen.append(event.WhichOneof("event"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "stream broke after the answer began" in (caught.value.details() or "")
        assert seen[0] == "decision" and seen.count("delta") > 0 and "done" not in seen


async def test_health_and_reflection(router: Running) -> None:
    health = health_pb2_grpc.HealthStub(router.channel)
    for service in ("", "router.v1.Router"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(router.channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = set()
    async for response in responses:
        names = {s.name for s in response.list_services_response.service}
    assert {"router.v1.Router", "router.v1.Admin", "grpc.health.v1.Health"} <= names


async def test_admin_needs_admin_key(router: Running) -> None:
    models = await router.admin.ListModels(pb.ListModelsRequest(), metadata=auth(ADMIN_KEY))
    assert {m.name for m in models.models} == {"glm-5.2", "kimi-2.7", "gpt-5.5", "claude-opus-4.8"}
    with pytest.raises(aio.AioRpcError) as caught:
        await router.admin.ListModels(pb.ListModelsRequest(), metadata=auth(DEMO_KEY))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_explain_shows_the_policy_choice_without_exploring() -> None:
    config = fast_config(exploration={"rate": 1.0, "shadow_rate": 0.0})
    async with running_router(config) as running:
        explained = await running.router.Explain(route_request(), metadata=auth(DEMO_KEY))
        routed = (await events(running, route_request()))[0].decision
    assert (explained.experiment_arm, explained.tier) == ("policy", pb.TIER_CHEAP)
    assert (routed.experiment_arm, routed.tier) == ("explore", pb.TIER_FRONTIER)
    assert routed.propensity == 1.0
