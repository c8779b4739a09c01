"""A `router.v1.Router/Route` that does nothing: it streams a fixed decision, the 50-token answer
in one delta, and a done event, at once. It is the floor of the gRPC transport in Python, so
bench_gateway can tell what the router adds from what any gRPC hop costs on this machine.

    python -m benchmarks.echo_router --port 50099
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc import aio

from router_service._proto import router_pb2 as pb

ANSWER = " ".join(["token"] * 50)


async def route(_request: pb.RouteRequest, _context: object) -> AsyncIterator[pb.RouteEvent]:
    yield pb.RouteEvent(decision=pb.RouteDecision(model="glm-5.2", tier=pb.TIER_CHEAP))
    yield pb.RouteEvent(delta=pb.Delta(text=ANSWER))
    yield pb.RouteEvent(done=pb.RouteSummary(usage=pb.Usage(output_tokens=50)))


async def serve(port: int) -> None:
    server = aio.server()
    handler = grpc.unary_stream_rpc_method_handler(
        route,
        request_deserializer=pb.RouteRequest.FromString,
        response_serializer=pb.RouteEvent.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("router.v1.Router", {"Route": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
