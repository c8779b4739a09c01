"""Router errors to gRPC status, in one table.

Quota refusals carry a `google.rpc.QuotaFailure` detail naming the violated quota, so clients
can tell a budget cut-off from a rate limit without parsing messages.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from router_service.errors import (
    AllProvidersFailed,
    ArtifactRejected,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProviderError,
    QuotaExceeded,
    RouterError,
    StoreUnavailable,
    Unauthenticated,
)

__all__ = ["abort", "status_code"]

# Most specific first: the first class the error is an instance of decides.
_STATUS: tuple[tuple[type[RouterError], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (AllProvidersFailed, grpc.StatusCode.UNAVAILABLE),
    (ProviderError, grpc.StatusCode.UNAVAILABLE),
    (ArtifactRejected, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_code(error: RouterError) -> grpc.StatusCode:
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


async def abort(context: aio.ServicerContext[object, object], error: RouterError) -> NoReturn:
    """End the RPC with the status `error` maps to."""
    code = status_code(error)
    if isinstance(error, QuotaExceeded):
        detail = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=error.subject, description=error.description
                )
            ]
        )
        status = status_pb2.Status(code=code.value[0], message=error.caller_message)
        status.details.add().Pack(detail)
        await context.abort_with_status(rpc_status.to_status(status))
    await context.abort(code, error.caller_message)
