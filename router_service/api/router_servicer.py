"""The `router.v1.Router` service: Route, Explain and Feedback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.message import Message
from grpc import aio

from router_service._proto import router_pb2 as pb
from router_service.api.batching import Batches
from router_service.api.convert import decision_message, delta_events, done_event
from router_service.api.status import abort, status_code
from router_service.api.validation import (
    valid_request_id,
    validate_feedback_request,
    validate_route_request,
)
from router_service.auth import App, Authenticator
from router_service.call import RouteCall
from router_service.calllog.feedback import FeedbackRecorder
from router_service.config import LimitsConfig
from router_service.errors import InternalError, InvalidRequest, RouterError, StoreUnavailable
from router_service.pipeline import Pipeline
from router_service.telemetry.attributes import APP
from router_service.telemetry.metrics import RouterMetrics
from router_service.telemetry.tracing import CallTrace, Tracing

__all__ = ["RouterServicer"]

Context = aio.ServicerContext[object, object]
Metadata = Iterable[tuple[str, str | bytes]] | None
M = TypeVar("M", bound=Message)

log = logging.getLogger(__name__)

MALFORMED = "the request is not a valid message of this RPC (bad protobuf or invalid UTF-8)"
SERVICE = pb.DESCRIPTOR.services_by_name["Router"].full_name


_CANCELLED = grpc.StatusCode.CANCELLED.value[0]


def _parsed(request: M | None) -> M:
    """The request, or INVALID_ARGUMENT when grpc could not parse it (it hands over None)."""
    if request is None:
        raise InvalidRequest(MALFORMED)
    return request


class _Rpc:
    """One RPC as it is observed: its trace, and what `rpc.server.duration` records when it
    ends (its status, and the calling app once authenticated)."""

    __slots__ = ("_metrics", "app", "code", "method", "started", "trace")

    def __init__(self, trace: CallTrace, method: str, metrics: RouterMetrics | None) -> None:
        self.trace = trace
        self.method = method
        self._metrics = metrics
        self.started = time.perf_counter()
        self.app: str | None = None
        self.code = 0  # OK until something says otherwise

    def end(self) -> None:
        self.trace.end()
        if self._metrics is not None:
            elapsed = time.perf_counter() - self.started
            self._metrics.rpc(SERVICE, self.method, self.code, self.app, elapsed)


async def _fail(context: Context, rpc: _Rpc, error: RouterError) -> NoReturn:
    rpc.code = status_code(error).value[0]
    rpc.trace.fail(error, rpc.code)
    await abort(context, error)


class _Serving:
    """How every RPC ends: a `RouterError` with the status it maps to; an error nobody raised
    on purpose with INTERNAL (its text may carry anything, a prompt or a key, so it goes to the
    log and the caller learns only the fact); a cancellation as CANCELLED; and in every case
    with its trace ended and its metric recorded. It never swallows an exception."""

    __slots__ = ("_context", "_rpc")

    def __init__(self, rpc: _Rpc, context: Context) -> None:
        self._rpc = rpc
        self._context = context

    async def __aenter__(self) -> _Rpc:
        return self._rpc

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        rpc = self._rpc
        try:
            if isinstance(error, RouterError):
                await _fail(self._context, rpc, error)
            elif isinstance(error, asyncio.CancelledError):
                rpc.code = _CANCELLED
            elif isinstance(error, Exception):
                log.error("%s failed on an unexpected error", rpc.method, exc_info=error)
                unexpected = InternalError(f"{rpc.method}: internal error (logged by the router)")
                await _fail(self._context, rpc, unexpected)
        finally:
            rpc.end()


class RouterServicer:
    def __init__(
        self,
        auth: Authenticator,
        pipeline: Pipeline,
        limits: LimitsConfig,
        *,
        tracing: Tracing | None = None,
        metrics: RouterMetrics | None = None,
        feedback: FeedbackRecorder | None = None,
    ) -> None:
        self._auth = auth
        self._pipeline = pipeline
        self._limits = limits
        self._tracing = tracing or Tracing()
        self._metrics = metrics
        self._feedback = feedback
        # The streams in flight (their producer tasks), for `drain`.
        self._streams: set[asyncio.Task[None]] = set()

    async def drain(self) -> None:
        """Wait until every stream's producer has finished, its call costed and recorded (at
        shutdown, after gRPC has ended the RPCs)."""
        while self._streams:
            await asyncio.gather(*self._streams, return_exceptions=True)

    def _serving(self, method: str, metadata: Metadata, context: Context) -> _Serving:
        trace = self._tracing.start_rpc(SERVICE, method, metadata)
        return _Serving(_Rpc(trace, method, self._metrics), context)

    def _app(self, rpc: _Rpc, metadata: Metadata) -> App:
        """The calling app, noted on the RPC's span and metric."""
        app = self._auth.app(metadata)
        rpc.app = app.name
        rpc.trace.set(APP, app.name)
        return app

    def _caller(self, rpc: _Rpc, metadata: Metadata, request: M | None) -> tuple[App, M]:
        """The calling app and its request, once that parsed."""
        return self._app(rpc, metadata), _parsed(request)

    async def _route_call(
        self, app: App, request: pb.RouteRequest | None, trace: CallTrace, arrived_at: float
    ) -> RouteCall:
        """The app's `Route` call, checked and decided. One refused as invalid, by the
        request's checks or by the policy (an unknown forced model, no model that fits), is
        recorded before it is refused (a cost record with no decision; an unauthenticated call
        never gets here, so only known apps can add to the log)."""
        try:
            chat = validate_route_request(_parsed(request), self._limits)
            return await self._pipeline.route(app, chat, trace=trace, arrived_at=arrived_at)
        except InvalidRequest as exc:
            self._pipeline.refuse_invalid(app, exc, valid_request_id(request))
            raise

    async def Route(
        self, request: pb.RouteRequest | None, context: Context
    ) -> AsyncIterator[pb.RouteEvent]:
        arrived_at = time.perf_counter()
        metadata = context.invocation_metadata()
        async with self._serving("Route", metadata, context) as rpc:
            trace = rpc.trace
            app = self._app(rpc, metadata)
            call = await self._route_call(app, request, trace, arrived_at)
            plan = call.plan
            request_id = plan.request.request_id
            try:
                remaining = context.time_remaining()
                deadline = (
                    None if remaining is None else asyncio.get_running_loop().time() + remaining
                )
                # The stream's producer is started, then the decision handed to gRPC: the
                # decision's write begins first, and the upstream request leaves while gRPC
                # completes it instead of after. Written while the upstream answers, the
                # decision would wait for the CPU the answer's first bytes take, and the first
                # delta behind it; sent and completed before the upstream request, it would
                # delay that request by gRPC's write round trip (BENCHMARKS.md: this order beat
                # both, against a fast and a distant upstream). Deltas that arrive together go
                # out as one message.
                async with Batches(call.stream(deadline=deadline), tracker=self._streams) as stream:
                    yield pb.RouteEvent(decision=decision_message(plan, request_id))
                    async for batch in stream:
                        for event in delta_events(batch):
                            yield event
            finally:
                # Records the call and gives back its hold if the caller left before the stream
                # began; nothing once the stream has run.
                call.release()
            assert call.summary is not None
            yield done_event(call.summary, request_id)

    async def Explain(self, request: pb.RouteRequest | None, context: Context) -> pb.RouteDecision:
        metadata = context.invocation_metadata()
        async with self._serving("Explain", metadata, context) as rpc:
            trace = rpc.trace
            app, request = self._caller(rpc, metadata, request)
            chat = validate_route_request(request, self._limits)
            plan = await self._pipeline.plan(app, chat, trace=trace, explore=False)
            trace.set_decision(plan.decision, chat.request_id)
            return decision_message(plan, chat.request_id)

    async def Feedback(
        self, request: pb.FeedbackRequest | None, context: Context
    ) -> pb.FeedbackResponse:
        metadata = context.invocation_metadata()
        async with self._serving("Feedback", metadata, context) as rpc:
            app, request = self._caller(rpc, metadata, request)
            validate_feedback_request(request)
            if self._feedback is None:
                raise StoreUnavailable("feedback is not recorded: the call log is disabled")
            await self._feedback.record(
                app.name, request.request_id, request.score, request.label, request.comment
            )
            return pb.FeedbackResponse(accepted=True)
