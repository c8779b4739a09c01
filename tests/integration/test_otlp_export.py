"""What goes over the wire: a router process exporting OTLP/gRPC to an independent receiver,
configured only by the standard OTEL_* variables."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import yaml
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router_service._proto import router_pb2_grpc
from router_service.telemetry import attributes as a
from tests.component.test_route_api import route_request
from tests.support.configs import DEMO_KEY, fast_raw
from tests.support.otlp_receiver import (
    Received,
    attributes,
    otlp_http_receiver,
    otlp_receiver,
)
from tests.support.redis_server import free_port
from tests.support.servers import auth

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


async def wait_serving(target: str, process: asyncio.subprocess.Process) -> None:
    async with aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            if process.returncode is not None:
                raise AssertionError(f"the router exited with {process.returncode}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the router did not start serving")


async def start_router(
    tmp_path: Path, otel: dict[str, str]
) -> tuple[asyncio.subprocess.Process, str]:
    """`llm-router serve` on the fast test config with the OTEL_* variables `otel` (and no
    other), and its address."""
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(fast_raw()))
    target = f"127.0.0.1:{free_port()}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, **otel}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "router_service", "serve", "--config", str(config), "--listen", target),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return process, target


@pytest.mark.parametrize(
    ("protocol", "receiver", "described"),
    [
        ("grpc", otlp_receiver, b"telemetry: traces otlp, metrics otlp"),
        (
            "http/protobuf",
            otlp_http_receiver,
            b"telemetry: traces otlp (http/protobuf), metrics otlp (http/protobuf)",
        ),
    ],
)
async def test_every_route_arrives_as_a_trace_with_genai_attributes_and_the_cost(
    tmp_path: Path,
    protocol: str,
    receiver: Callable[[], AbstractAsyncContextManager[tuple[str, Received]]],
    described: bytes,
) -> None:
    async with receiver() as (endpoint, received):
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": "llm-router-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "60000",
        }
        process, target = await start_router(tmp_path, otel)
        try:
            await wait_serving(target, process)
            async with aio.insecure_channel(target) as channel:
                router = router_pb2_grpc.RouterStub(channel)
                traceparent = ("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
                metadata = (*auth(DEMO_KEY), traceparent)
                events = [e async for e in router.Route(route_request(), metadata=metadata)]
                done = events[-1].done
                explain = route_request(task="code_review")
                await router.Explain(explain, metadata=auth(DEMO_KEY))
            # Spans leave with the batch processor's next export.
            await asyncio.wait_for(received.arrived.wait(), timeout=10)
        finally:
            # SIGTERM: the router drains and flushes what telemetry it still holds.
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert described in stderr

    traced = [(res, s) for res, s in received.spans if s.trace_id.hex() == TRACE_ID]
    names = sorted(s.name for _, s in traced)
    assert names == ["budget.reserve", "budget.settle", "chat glm-5.2", "router.v1.Router/Route"]
    spans = {s.name: s for _, s in traced}
    server, provider = spans["router.v1.Router/Route"], spans["chat glm-5.2"]
    assert server.parent_span_id.hex() == PARENT_SPAN_ID
    assert provider.parent_span_id == server.span_id
    assert traced[0][0]["service.name"] == "llm-router-under-test"
    genai = attributes(provider.attributes)
    assert genai[a.GEN_AI_OPERATION_NAME] == "chat"
    assert genai[a.GEN_AI_PROVIDER_NAME] == "sim-openai"
    assert genai[a.GEN_AI_REQUEST_MODEL] == genai[a.GEN_AI_RESPONSE_MODEL] == "glm-5.2"
    assert genai[a.GEN_AI_USAGE_INPUT_TOKENS] == done.usage.input_tokens
    assert genai[a.GEN_AI_USAGE_OUTPUT_TOKENS] == done.usage.output_tokens
    assert genai[a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == done.usage.cached_input_tokens
    assert genai[a.COST_USD] == done.cost_usd > 0
    ours = attributes(server.attributes)
    assert ours[a.COST_USD] == done.cost_usd
    assert (ours[a.APP], ours[a.TASK], ours[a.TIER]) == ("demo", "summarization", "cheap")
    assert any(s.name == "router.v1.Router/Explain" for _, s in received.spans)
    # Metrics were flushed at shutdown.
    assert {
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "llm_router.cost",
        "llm_router.gateway.overhead",
    } <= received.metric_names


async def test_an_unreachable_collector_does_not_hold_up_the_exit(tmp_path: Path) -> None:
    # Nothing listens there: every export fails and the exporter retries for 10 s.
    unreachable = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    process, target = await start_router(tmp_path, unreachable)
    try:
        await wait_serving(target, process)
        async with aio.insecure_channel(target) as channel:
            router = router_pb2_grpc.RouterStub(channel)
            [_ async for _ in router.Route(route_request(), metadata=auth(DEMO_KEY))]
    finally:
        process.send_signal(signal.SIGTERM)
        started = asyncio.get_running_loop().time()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        took = asyncio.get_running_loop().time() - started
    assert process.returncode == 0, stderr.decode()
    # The last flush is given 3 s (server.TELEMETRY_FLUSH_S), then the process exits without it.
    assert took < 8, stderr.decode()
    assert b"telemetry exporters did not flush within 3 s" in stderr
