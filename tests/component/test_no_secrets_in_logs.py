"""What the service logs never holds prompt text or keys, whatever happens to a call."""

from __future__ import annotations

import logging

import pytest
from grpc import aio

from router_service._proto import router_pb2 as pb
from tests.component.test_route_api import route_request
from tests.support.configs import DEMO_KEY, fast_config
from tests.support.servers import auth, running_router

MARKER = "Summarize the confidential merger memo for Project Falcon"


async def test_logs_hold_no_prompt_text_or_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    request = route_request(
        messages=[
            pb.Message(role="system", content=f"{MARKER} (system)"),
            pb.Message(role="user", content=MARKER),
        ]
    )
    broken = {"failure": {"rate": 1.0, "mode": "mid_stream"}}
    for config in (
        fast_config(classifier={"enabled": True}),
        fast_config(providers={"sim-openai": broken, "sim-anthropic": broken}),
    ):
        async with running_router(config) as running:
            try:
                async for _ in running.router.Route(request, metadata=auth(DEMO_KEY)):
                    pass
            except aio.AioRpcError:
                pass  # the broken configuration ends the stream with an error
            with pytest.raises(aio.AioRpcError):
                await running.router.Explain(request, metadata=auth("not-a-" + DEMO_KEY))
    text = "\n".join(record.getMessage() + " " + repr(record.args) for record in caplog.records)
    assert caplog.records, "the calls above log something (start, stop, classifier)"
    assert "Project Falcon" not in text
    assert DEMO_KEY not in text
