"""An in-process router on a free port, and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from grpc import aio
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from router_service._proto import router_pb2_grpc
from router_service.config import RouterConfig
from router_service.server import RouterServer


@dataclass
class Running:
    server: RouterServer
    channel: aio.Channel
    router: router_pb2_grpc.RouterStub
    admin: router_pb2_grpc.AdminStub
    target: str


@asynccontextmanager
async def running_router(
    config: RouterConfig,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[Running]:
    server = RouterServer(
        config,
        environ={} if environ is None else environ,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    port = await server.start("127.0.0.1:0")
    target = f"127.0.0.1:{port}"
    channel = aio.insecure_channel(target)
    try:
        yield Running(
            server=server,
            channel=channel,
            router=router_pb2_grpc.RouterStub(channel),
            admin=router_pb2_grpc.AdminStub(channel),
            target=target,
        )
    finally:
        await channel.close()
        await server.stop(grace=1)


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)
