"""The `router.v1.Router` service: Route, Explain and Feedback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from grpc import aio

from router_service._proto import router_pb2 as pb
from router_service.api.convert import decision_message, delta_event, done_event
from router_service.api.status import abort
from router_service.api.validation import validate_route_request
from router_service.auth import Authenticator
from router_service.config import LimitsConfig
from router_service.errors import InvalidRequest, RouterError
from router_service.pipeline import Pipeline

__all__ = ["RouterServicer"]

Context = aio.ServicerContext[object, object]

MALFORMED = "the request is not a valid message of this RPC (bad protobuf or invalid UTF-8)"


class RouterServicer:
    def __init__(self, auth: Authenticator, pipeline: Pipeline, limits: LimitsConfig) -> None:
        self._auth = auth
        self._pipeline = pipeline
        self._limits = limits

    async def Route(
        self, request: pb.RouteRequest | None, context: Context
    ) -> AsyncIterator[pb.RouteEvent]:
        try:
            app = self._auth.app(context.invocation_metadata())
            if request is None:
                raise InvalidRequest(MALFORMED)
            chat = validate_route_request(request, self._limits)
            plan = await self._pipeline.plan(app, chat)
            call = await self._pipeline.start(app, plan)
            try:
                yield pb.RouteEvent(decision=decision_message(plan, chat.request_id))
                remaining = context.time_remaining()
                deadline = (
                    None if remaining is None else asyncio.get_running_loop().time() + remaining
                )
                async with aclosing(call.stream(deadline=deadline)) as deltas:
                    async for delta in deltas:
                        yield delta_event(delta)
            finally:
                # Gives back the budget hold if the caller left before the stream began.
                call.release()
            assert call.summary is not None
            yield done_event(call.summary, chat.request_id)
        except RouterError as exc:
            await abort(context, exc)

    async def Explain(self, request: pb.RouteRequest | None, context: Context) -> pb.RouteDecision:
        try:
            app = self._auth.app(context.invocation_metadata())
            if request is None:
                raise InvalidRequest(MALFORMED)
            chat = validate_route_request(request, self._limits)
            return decision_message(await self._pipeline.plan(app, chat), chat.request_id)
        except RouterError as exc:
            await abort(context, exc)
