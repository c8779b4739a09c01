"""SIGTERM on `llm-router serve`: health turns NOT_SERVING at once (calls are still taken for
the drain delay, while load balancers catch up), then new calls are refused, and a stream in
flight finishes within the grace period before the process exits cleanly."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
import yaml
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router_service._proto import router_pb2_grpc
from tests.component.test_route_api import route_request
from tests.support.configs import DEMO_KEY, fast_raw
from tests.support.processes import replicas, wait_serving
from tests.support.servers import auth

pytestmark = pytest.mark.integration


async def test_sigterm_drains_in_flight_streams(tmp_path: Path) -> None:
    # About a second of streaming per answer; five seconds of grace.
    paced = {"ttft_ms": 0, "tokens_per_second": 100, "answer_tokens": 100}
    config = tmp_path / "router.yaml"
    raw = fast_raw(
        providers={"sim-openai": paced}, server={"grace_period_s": 5, "drain_delay_s": 0.5}
    )
    config.write_text(yaml.safe_dump(raw))
    with replicas(config, 1, tmp_path) as (replica,):
        await wait_serving([replica.target])
        async with aio.insecure_channel(replica.target) as channel:
            router = router_pb2_grpc.RouterStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            call = router.Route(route_request(), metadata=auth(DEMO_KEY))
            assert (await call.read()).HasField("decision")

            replica.process.send_signal(signal.SIGTERM)
            status = None
            for _ in range(100):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                status = reply.status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.01)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING

            await asyncio.sleep(0.7)  # past the drain delay: the server now refuses new calls
            with pytest.raises(aio.AioRpcError) as refused:
                await router.Explain(route_request(), metadata=auth(DEMO_KEY), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            events = []
            while (event := await call.read()) is not aio.EOF:
                events.append(event)
            assert events[-1].HasField("done")
            assert events[-1].done.usage.output_tokens == 100
            assert "".join(e.delta.text for e in events[:-1]).count(" ") == 99
        assert await asyncio.to_thread(replica.process.wait, 15) == 0
