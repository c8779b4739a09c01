"""Registers the servicers with a grpc.aio server.

The generated `add_*_to_server` helpers are not used because their deserializers raise on bad
input, which gRPC reports as an opaque INTERNAL error. Here a message that does not parse
(malformed protobuf, invalid UTF-8 in a string) reaches the handler as None, and the handler
answers INVALID_ARGUMENT with a clear message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc import aio

from router_service._proto import router_pb2 as pb
from router_service.api.admin_servicer import AdminServicer
from router_service.api.router_servicer import RouterServicer

__all__ = ["ADMIN_SERVICE", "ROUTER_SERVICE", "register"]

ROUTER_SERVICE = pb.DESCRIPTOR.services_by_name["Router"].full_name
ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["Admin"].full_name

M = TypeVar("M", bound=Message)


def _lenient(cls: type[M]) -> Callable[[bytes], M | None]:
    def parse(data: bytes) -> M | None:
        try:
            return cls.FromString(data)
        except DecodeError:
            return None

    return parse


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _unary(behavior: Any, request: type[Message]) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=_lenient(request), response_serializer=_serialize
    )


def register(server: aio.Server, router: RouterServicer, admin: AdminServicer) -> None:
    services: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {
        ROUTER_SERVICE: {
            "Route": grpc.unary_stream_rpc_method_handler(
                router.Route,
                request_deserializer=_lenient(pb.RouteRequest),
                response_serializer=_serialize,
            ),
            "Explain": _unary(router.Explain, pb.RouteRequest),
            "Feedback": _unary(router.Feedback, pb.FeedbackRequest),
        },
        ADMIN_SERVICE: {
            "ListModels": _unary(admin.ListModels, pb.ListModelsRequest),
            "SetBudget": _unary(admin.SetBudget, pb.SetBudgetRequest),
            "GetBudget": _unary(admin.GetBudget, pb.GetBudgetRequest),
            "GetStats": _unary(admin.GetStats, pb.GetStatsRequest),
            "GetClassifier": _unary(admin.GetClassifier, pb.GetClassifierRequest),
            "ReloadClassifier": _unary(admin.ReloadClassifier, pb.ReloadClassifierRequest),
        },
    }
    for name, handlers in services.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)
