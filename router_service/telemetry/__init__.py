"""OpenTelemetry for the router: spans, metrics, attribute names, and SDK set-up at the edge.

Library code imports `Telemetry` (or `Tracing`, `CallTrace`, `RouterMetrics`): metrics use only
the OpenTelemetry API, spans are built as the SDK's finished-span records (see `tracing`);
`telemetry.sdk.configure_sdk`, which sets the SDK up from the `OTEL_*` variables, is imported by
`llm-router serve` alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from router_service.telemetry.metrics import RouterMetrics
from router_service.telemetry.tracing import NO_TRACE, CallTrace, Tracing

__all__ = ["NO_TRACE", "CallTrace", "RouterMetrics", "Telemetry", "Tracing"]


class Telemetry:
    """Tracing and metrics for one server, from the providers the edge set up (or none)."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        provider_systems: Mapping[str, str] | None = None,
        provider_servers: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        """`provider_systems`: each configured provider's `gen_ai.provider.name` (default: its
        configured name); `provider_servers`: the host and port its requests go to."""
        systems = dict(provider_systems or {})
        self.tracing = Tracing(tracer_provider, systems, provider_servers)
        self.metrics = None if meter_provider is None else RouterMetrics(meter_provider, systems)
