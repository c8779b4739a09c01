"""The `router.v1.Admin` service: budgets, catalog, classifier and statistics; admin keys only."""

from __future__ import annotations

from grpc import aio

from router_service._proto import router_pb2 as pb
from router_service.api.convert import tier_message
from router_service.api.status import abort
from router_service.auth import Authenticator
from router_service.breaker import CircuitBreaker
from router_service.catalog import Catalog
from router_service.cost import micro_to_usd
from router_service.errors import InvalidRequest, RouterError

__all__ = ["AdminServicer"]

Context = aio.ServicerContext[object, object]


class AdminServicer:
    def __init__(
        self, auth: Authenticator, catalog: Catalog, breaker: CircuitBreaker | None = None
    ) -> None:
        self._auth = auth
        self._catalog = catalog
        self._breaker = breaker

    async def ListModels(
        self, request: pb.ListModelsRequest | None, context: Context
    ) -> pb.ListModelsResponse:
        try:
            self._auth.admin(context.invocation_metadata())
            if request is None:
                raise InvalidRequest("malformed request")
            unhealthy = self._breaker.unhealthy(self._catalog) if self._breaker else frozenset()
            return pb.ListModelsResponse(
                models=[
                    pb.ModelInfo(
                        name=m.name,
                        provider=",".join(d.provider for d in m.deployments),
                        tier=tier_message(m.tier),
                        input_usd_per_mtok=micro_to_usd(m.prices.input),
                        cached_input_usd_per_mtok=micro_to_usd(m.prices.cached_input),
                        cache_write_usd_per_mtok=micro_to_usd(m.prices.cache_write),
                        output_usd_per_mtok=micro_to_usd(m.prices.output),
                        context_window=m.context_window,
                        capabilities=sorted(m.capabilities),
                        # Healthy while any deployment's circuit breaker lets calls through.
                        healthy=m.name not in unhealthy,
                    )
                    for m in self._catalog
                ]
            )
        except RouterError as exc:
            await abort(context, exc)
