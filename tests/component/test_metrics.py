"""Metrics of routed calls over real gRPC, read from an in-memory metric reader."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from router_service._proto import router_pb2 as pb
from router_service.telemetry import attributes as a
from router_service.telemetry import metrics as m
from tests.component.test_route_api import route_request
from tests.support.configs import DEMO_KEY, fast_config
from tests.support.servers import auth, running_router
from tests.support.telemetry import Recorded

# Long enough (well over 1,024 tokens) for the simulated providers' prefix cache.
LONG_SYSTEM = "You review support replies for tone, accuracy and policy. " * 120


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    telemetry = Recorded()
    yield telemetry
    telemetry.shutdown()


async def test_usage_cost_decisions_caches_and_overhead(recorded: Recorded, tmp_path: Path) -> None:
    config = fast_config(call_log={"enabled": True, "directory": str(tmp_path)})
    dones = []
    async with running_router(config, meter_provider=recorded.meter_provider) as running:
        for i in range(3):
            request = route_request(
                messages=[
                    pb.Message(role="system", content=LONG_SYSTEM),
                    pb.Message(role="user", content=f"Review reply number {i}."),
                ]
            )
            events = [e async for e in running.router.Route(request, metadata=auth(DEMO_KEY))]
            dones.append(events[-1].done)
        code_review = route_request(task="code_review")
        events = [e async for e in running.router.Route(code_review, metadata=auth(DEMO_KEY))]
        dones.append(events[-1].done)

        decisions = {
            (p.attributes[a.TASK], p.attributes[a.TIER], p.attributes[a.ARM]): p.value
            for p in recorded.points(m.ROUTING_DECISIONS)
        }
        assert decisions == {
            ("summarization", "cheap", "policy"): 3,
            ("code_review", "frontier", "policy"): 1,
        }
        tokens = {
            (p.attributes[a.GEN_AI_REQUEST_MODEL], p.attributes[a.GEN_AI_TOKEN_TYPE]): p
            for p in recorded.points(m.TOKEN_USAGE)
        }
        assert tokens["glm-5.2", "input"].sum == sum(d.usage.input_tokens for d in dones[:3])
        assert tokens["glm-5.2", "output"].sum == sum(d.usage.output_tokens for d in dones[:3])
        assert tokens["gpt-5.5", "input"].count == 1
        cost = {p.attributes[a.MODEL]: p.value for p in recorded.points(m.COST)}
        assert cost["glm-5.2"] == pytest.approx(sum(d.cost_usd for d in dones[:3]))
        assert cost["gpt-5.5"] == pytest.approx(dones[3].cost_usd)
        # The prefix was cold on the first call and warm on the next two.
        assert [d.usage.cached_input_tokens > 0 for d in dones[:3]] == [False, True, True]
        (prompt_hits,) = recorded.points(m.CACHE_HITS)
        assert prompt_hits.attributes[a.CACHE_KIND] == "prompt" and prompt_hits.value == 2
        (duration,) = [
            p
            for p in recorded.points(m.OPERATION_DURATION)
            if p.attributes[a.GEN_AI_REQUEST_MODEL] == "glm-5.2"
        ]
        assert duration.count == 3
        assert sum(p.count for p in recorded.points(m.TIME_TO_FIRST_CHUNK)) == 4
        (overhead,) = recorded.points(m.GATEWAY_OVERHEAD)
        assert overhead.count == 4 and 0 < overhead.sum < 4 * 0.5
        dropped = {
            p.attributes[a.CALLLOG_DROP_REASON]: p.value for p in recorded.points(m.CALLLOG_DROPPED)
        }
        assert dropped == {"queue_full": 0, "sink_error": 0, "closed": 0, "invalid_flood": 0}


async def test_failed_calls_count_with_their_error_type(recorded: Recorded) -> None:
    failing = {"failure": {"rate": 1.0}}
    config = fast_config(providers={"sim-openai": failing, "sim-anthropic": failing})
    async with running_router(
        config, meter_provider=recorded.meter_provider, tracer_provider=recorded.tracer_provider
    ) as running:
        with pytest.raises(Exception, match="every candidate failed"):
            [e async for e in running.router.Route(route_request(), metadata=auth(DEMO_KEY))]
        (duration,) = recorded.points(m.OPERATION_DURATION)
        assert duration.attributes[a.ERROR_TYPE] == "failed"
        # No provider answered: the provider is that of the last request, as on its span.
        last = max(
            (s for s in recorded.spans() if s.name.startswith("chat ")),
            key=lambda s: s.start_time or 0,
        )
        attrs = last.attributes or {}
        assert duration.attributes[a.GEN_AI_PROVIDER_NAME] == attrs[a.GEN_AI_PROVIDER_NAME]
        assert duration.attributes[a.GEN_AI_REQUEST_MODEL] == attrs[a.GEN_AI_REQUEST_MODEL]
        assert recorded.points(m.TOKEN_USAGE) == []
        assert recorded.points(m.COST) == []


async def test_every_rpc_is_measured_with_its_status_and_app(recorded: Recorded) -> None:
    """Refusals of every kind show per app, whether or not a call was made."""
    slow = {"ttft_ms": 0, "tokens_per_second": 400, "answer_tokens": 2000}
    config = fast_config(providers={"sim-openai": slow})
    async with running_router(config, meter_provider=recorded.meter_provider) as running:
        left = running.router.Route(route_request(max_output_tokens=2000), metadata=auth(DEMO_KEY))
        await anext(aiter(left))
        left.cancel()
        for request, key in (
            (route_request(task=""), DEMO_KEY),  # INVALID_ARGUMENT, app known
            (route_request(), "not-a-key"),  # UNAUTHENTICATED, no app
        ):
            with pytest.raises(aio.AioRpcError):
                await running.router.Explain(request, metadata=auth(key))
        # Refused as invalid: in the call log, with no decision to count.
        with pytest.raises(aio.AioRpcError) as caught:
            [e async for e in running.router.Route(route_request(task=""), metadata=auth(DEMO_KEY))]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        short = route_request(max_output_tokens=10)
        events = [e async for e in running.router.Route(short, metadata=auth(DEMO_KEY))]
        assert events[-1].HasField("done")
        await asyncio.sleep(0.05)  # the cancelled RPC's end, on the server
    seen = {
        (
            p.attributes[a.RPC_METHOD],
            p.attributes[a.RPC_GRPC_STATUS_CODE],
            p.attributes.get(a.APP),
        ): p.count
        for p in recorded.points(m.RPC_SERVER_DURATION)
    }
    assert seen[("Explain", grpc.StatusCode.INVALID_ARGUMENT.value[0], "demo")] == 1
    assert seen[("Explain", grpc.StatusCode.UNAUTHENTICATED.value[0], None)] == 1
    assert seen[("Route", 0, "demo")] == 1
    assert seen[("Route", grpc.StatusCode.INVALID_ARGUMENT.value[0], "demo")] == 1
    assert sum(p.value for p in recorded.points(m.ROUTING_DECISIONS)) == 2
    # The first Route was cancelled by its caller after its decision.
    assert seen[("Route", grpc.StatusCode.CANCELLED.value[0], "demo")] == 1
