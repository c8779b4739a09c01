"""The composition root: builds every long-lived object once, runs the gRPC server, drains it.

One `httpx.AsyncClient` (one connection pool for every provider), the providers, the pipeline
and the servicers are built here and nowhere else, and closed here on shutdown. SIGTERM turns
health to NOT_SERVING, refuses new calls, and gives in-flight streams the grace period to finish.
With `server.tls` the port speaks TLS only; `server.health_listen` adds a plaintext port with
nothing but the health service (the same instance, so it reports the drain too) for probes that
cannot speak TLS.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from router_service.accounting import Accounting
from router_service.api.admin_servicer import AdminServicer
from router_service.api.registration import ADMIN_SERVICE, ROUTER_SERVICE, register
from router_service.api.router_servicer import RouterServicer
from router_service.auth import Authenticator
from router_service.breaker import CircuitBreaker
from router_service.catalog import Catalog
from router_service.classification import ClassifierRuntime
from router_service.config import ConfigError, RouterConfig
from router_service.config.catalog import HttpProviderConfig
from router_service.feedback_loop import FeedbackLoop
from router_service.pipeline import Pipeline
from router_service.providers.base import Provider
from router_service.providers.http import build_http_client
from router_service.providers.registry import build_providers
from router_service.store import RedisClient
from router_service.store.connect import connect
from router_service.telemetry import Telemetry
from router_service.telemetry.sdk import configure_sdk
from router_service.tls import CertificateFiles, server_credentials

__all__ = ["RouterServer", "serve"]

log = logging.getLogger(__name__)

# Leave room above the request-size limit (a quarter of it, at least 64 KiB) so an oversized
# request reaches validation and gets a clear INVALID_ARGUMENT; anything larger still is
# refused by gRPC itself with RESOURCE_EXHAUSTED, unread.
_RECEIVE_SLACK_BYTES = 64 * 1024
# How long the last telemetry flush may hold up the exit: on Kubernetes the pod's grace period
# (30 s) covers the drain delay (5 s), the in-flight calls (`server.grace_period_s`, 20 s) and
# this.
TELEMETRY_FLUSH_S = 3.0


def _provider_servers(
    config: RouterConfig, environ: Mapping[str, str]
) -> dict[str, tuple[str, int]]:
    """Each provider's host and port, as its base URL names them (the GenAI client spans'
    `server.address` and `server.port`). A base URL that does not resolve is left out here:
    building the providers reports it."""
    servers = {}
    for name, provider in config.providers.items():
        if not isinstance(provider, HttpProviderConfig):
            continue  # simulated: no server
        try:
            url = urlsplit(provider.resolved_base_url(environ))
            port = url.port or (443 if url.scheme == "https" else 80)
        except (ConfigError, ValueError):
            continue
        if url.hostname:
            servers[name] = (url.hostname, port)
    return servers


def _check_environment(config: RouterConfig, environ: Mapping[str, str]) -> None:
    """`ConfigError` for what `config` takes from the environment or from files and cannot have:
    app and admin keys, the Redis URL, the TLS files, provider keys and base URLs. Building and
    starting a `RouterServer` resolves the same; `serve` checks it first, so that a config the
    service cannot start on is its one error, before anything (telemetry included) is set up."""
    Authenticator(config, environ)
    config.store.resolved_redis_url(environ)
    if config.server.tls is not None:
        CertificateFiles(config.server.tls).load()
    for name, provider in config.providers.items():
        if isinstance(provider, HttpProviderConfig):
            try:
                provider.resolved_base_url(environ)
                provider.resolved_api_key(environ)
            except ConfigError as exc:
                raise ConfigError(f"providers.{name}: {exc}") from None


class RouterServer:
    """The service with everything it owns. `start`, then `stop` (or `wait`)."""

    def __init__(
        self,
        config: RouterConfig,
        environ: Mapping[str, str] | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.config = config
        env = os.environ if environ is None else environ
        self._environ = env
        # Tracing and metrics from the providers the edge set up; none: telemetry off.
        self.telemetry = Telemetry(
            tracer_provider,
            meter_provider,
            {name: p.genai_system(name) for name, p in config.providers.items()},
            _provider_servers(config, env),
        )
        self.feedback_loop: FeedbackLoop | None = None
        self.auth = Authenticator(config, env)
        self.catalog = Catalog(config.models)
        # Provider deployments' circuit breakers, shared by routing, fallbacks and Admin.
        self.breaker = CircuitBreaker(config.circuit_breaker)
        self._http: httpx.AsyncClient | None = None
        self.redis_url = config.store.resolved_redis_url(env)
        # The one Redis client (with its connection pool), when a Redis is configured.
        self.redis: RedisClient | None = None
        self.providers: dict[str, Provider] = {}
        # Budgets, rate limits, caches and statistics, over Redis or in-process.
        self.accounting: Accounting | None = None
        # The difficulty classifier, swapped without a restart; None when disabled.
        self.classifier: ClassifierRuntime | None = None
        self._watch: asyncio.Task[None] | None = None
        self._released = False
        self._router: RouterServicer | None = None
        self._server: aio.Server | None = None
        # The plaintext health-only server on `server.health_listen`, when configured.
        self._health_server: aio.Server | None = None
        self.health = HealthServicer()
        self.port: int | None = None
        self.health_port: int | None = None

    async def start(self, listen: str | None = None) -> int:
        """Bind, start serving, and return the bound port (useful with port 0). A failure
        (a bad artifact, a missing key, a taken port) releases what was built so far."""
        try:
            return await self._start(listen)
        except BaseException:
            await self._release()
            raise

    async def _start(self, listen: str | None) -> int:
        config = self.config
        # First: a certificate that cannot be used stops the start before anything connects.
        credentials = None if config.server.tls is None else server_credentials(config.server.tls)
        self._http = build_http_client(config.providers, self._environ)
        self.providers = build_providers(config.providers, self._http, self._environ)
        if self.redis_url is not None:
            self.redis = await connect(config.store, self.redis_url)
        self.accounting = Accounting.build(config.store, self.redis)
        self.feedback_loop = loop = FeedbackLoop(config, self.redis, self.telemetry)
        if config.classifier.enabled:
            named = {t.threshold for t in config.tasks.values() if isinstance(t.threshold, str)}
            named |= {
                o.threshold
                for app in config.apps.values()
                for o in app.tasks.values()
                if isinstance(o.threshold, str)
            }
            self.classifier = ClassifierRuntime(config.classifier, required_thresholds=named)
            # A bad artifact stops the start: serving without the classifier it was
            # configured with would route every request by task defaults unnoticed.
            await asyncio.to_thread(self.classifier.load_initial)
            if config.classifier.watch:
                self._watch = asyncio.create_task(self.classifier.watch(), name="classifier")
        pipeline = Pipeline(
            catalog=self.catalog,
            providers=self.providers,
            difficulty=self.classifier,
            observers=(self.accounting.stats, *loop.observers),
            accounting=self.accounting,
            breaker=self.breaker,
            exploration=loop.exploration,
            shadow=loop.shadow,
        )
        loop.start(pipeline)
        server = aio.server(
            options=[
                (
                    "grpc.max_receive_message_length",
                    config.limits.max_request_bytes
                    + max(_RECEIVE_SLACK_BYTES, config.limits.max_request_bytes // 4),
                ),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ]
        )
        self._router = RouterServicer(
            self.auth,
            pipeline,
            config.limits,
            tracing=self.telemetry.tracing,
            metrics=self.telemetry.metrics,
            feedback=loop.feedback,
        )
        register(
            server,
            self._router,
            AdminServicer(
                self.auth,
                self.catalog,
                accounting=self.accounting,
                breaker=self.breaker,
                classifier=self.classifier,
                shadow_budget_share=config.exploration.shadow_budget_share,
            ),
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                ROUTER_SERVICE,
                ADMIN_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        port = _bind(server, listen or config.server.listen, credentials)
        health_server = None
        if config.server.health_listen is not None:
            health_server = aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, health_server)
            self.health_port = _bind(health_server, config.server.health_listen, None)
        await server.start()
        self._server = server
        self.port = port
        if health_server is not None:
            await health_server.start()
            self._health_server = health_server
        for service in ("", ROUTER_SERVICE, ADMIN_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new calls, let in-flight ones finish, then close."""
        if self._server is None:
            return
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self.config.server.grace_period_s if grace is None else grace)
        self._server = None
        await self._release()

    async def _release(self) -> None:
        """Close everything `start` built, in reverse order of need (once)."""
        if self._released:
            return
        self._released = True
        # The health port stops only now, after `stop` drained the main server, so probes see
        # NOT_SERVING for the whole drain; the main server is still here only when a start
        # failed after it began serving.
        for server in (self._server, self._health_server):
            if server is not None:
                await server.stop(0)
        self._server = self._health_server = None
        if self._router is not None:
            # Calls the drain cut off are costed and recorded by their own cleanup; it must
            # finish before the accounting and the store it uses close.
            await self._router.drain()
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.feedback_loop is not None:
            await self.feedback_loop.aclose()
        if self.accounting is not None:
            # Settles every finished call's cost and writes the last statistics.
            await self.accounting.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        if self._http is not None:
            await self._http.aclose()
        if self.redis is not None:
            await self.redis.aclose()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def _bind(server: aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """The port bound at `address`, with TLS when `credentials` are given."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # gRPC's way of saying the address is taken or not ours
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address}: in use, or not an address of this host")
    return port


async def serve(
    config: RouterConfig,
    listen: str | None = None,
    *,
    when_serving: Callable[[int], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then drain. `when_serving(port)` runs once the service is
    SERVING (`serve --demo` streams an answer from it as a client would)."""
    started = time.perf_counter()
    _check_environment(config, os.environ)
    # The one place the OpenTelemetry SDK is set up, from the standard OTEL_* variables.
    sdk = configure_sdk(os.environ)
    log.info("%s", sdk.description)
    for name, app in config.apps.items():
        if app.budget is None:
            log.warning(
                "app %s has no monthly budget in the config: its spend is not capped until "
                "`llm-router budget set` gives it one",
                name,
            )
    server = RouterServer(
        config, tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider
    )
    # Everything built so far lives as long as the process (modules, gRPC, onnxruntime, the
    # SDK): out of the collector's sight, a full collection scans only what calls left behind
    # (1.6 ms instead of 29 ms, measured; it runs every thousand calls or so, on the loop).
    gc.collect()
    gc.freeze()
    port = await server.start(listen)
    address = (listen or config.server.listen).rpartition(":")[0]
    tls = config.server.tls
    transport = "" if tls is None else " over mutual TLS" if tls.client_ca_file else " over TLS"
    log.info(
        "serving on %s:%d%s (SERVING after %.0f ms)",
        address,
        port,
        transport,
        (time.perf_counter() - started) * 1000,
    )
    if config.server.health_listen is not None:
        log.info(
            "health checks in plaintext on %s:%d",
            config.server.health_listen.rpartition(":")[0],
            server.health_port,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    after = None if when_serving is None else asyncio.create_task(when_serving(port))
    await stop.wait()
    if after is not None:
        after.cancel()
    await server.health.enter_graceful_shutdown()
    if config.server.drain_delay_s:
        log.info("NOT_SERVING; still taking calls for %.1f s", config.server.drain_delay_s)
        await asyncio.sleep(config.server.drain_delay_s)
    log.info("draining: up to %.0f s for in-flight calls", config.server.grace_period_s)
    try:
        await server.stop()
    finally:
        # Export what the batch processors still hold before the process exits, for a bounded
        # time (the providers have no exit hook of their own: see telemetry.sdk).
        if not await sdk.close(TELEMETRY_FLUSH_S):
            log.warning(
                "telemetry exporters did not flush within %.0f s (collector unreachable?); "
                "exiting without them",
                TELEMETRY_FLUSH_S,
            )
    log.info("stopped")
