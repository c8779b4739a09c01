"""Sets up the OpenTelemetry SDK once, at the edge, from the standard `OTEL_*` variables.

Only `llm-router serve` calls `configure_sdk`; everything else uses the API and is handed the
providers built here. What is honoured:

- `OTEL_SDK_DISABLED=true`: no SDK at all.
- `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER`: `otlp` (default), `console` or `none`.
- `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal `..._TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`):
  where OTLP goes. When neither an endpoint nor an exporter is set, that signal stays off, so an
  unconfigured service pays next to nothing for telemetry instead of retrying against a
  collector that is not there.
- `OTEL_EXPORTER_OTLP_PROTOCOL` (and per signal): only `grpc` ships with the service. Spans
  go through the SDK's OTLP/gRPC exporter with its encoder swapped for `otlp_encoding`'s,
  which writes the same request for a fraction of the CPU.
- Everything else (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
  `..._INSECURE`, `..._TIMEOUT`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`,
  `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_PROPAGATORS`) is read by the SDK itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from router_service.config import ConfigError
from router_service.telemetry.otlp_encoding import FastOTLPSpanExporter

__all__ = ["TelemetrySdk", "configure_sdk"]

DEFAULT_SERVICE_NAME = "llm-router"
_TRUE = {"true", "1", "yes"}


@dataclass(frozen=True, slots=True)
class TelemetrySdk:
    """The providers the SDK set up, and their exporters' names (None: the signal is off)."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    traces: str | None = None
    metrics: str | None = None
    description: str = "telemetry off"

    def shutdown(self) -> None:
        """Flush and stop the exporters. Blocks (it joins the export threads): call it from a
        worker thread when an event loop is running."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def _exporter_name(environ: Mapping[str, str], signal: str) -> str | None:
    """The exporter for `signal` ("traces" or "metrics"), or None when the signal is off."""
    chosen = environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
    )
    if not chosen:
        return "otlp" if endpoint else None
    names = [n.strip() for n in chosen.split(",") if n.strip() and n.strip() != "none"]
    if not names:
        return None
    if len(names) > 1 or names[0] not in {"otlp", "console"}:
        raise ConfigError(
            f"OTEL_{signal.upper()}_EXPORTER={chosen!r}: the service ships the exporters "
            "otlp (gRPC), console and none; choose one"
        )
    return names[0]


def _check_protocol(environ: Mapping[str, str], signal: str) -> None:
    protocol = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if protocol.strip().lower() != "grpc":
        raise ConfigError(
            f"OTLP protocol {protocol!r} for {signal}: the service exports OTLP over gRPC only; "
            "set OTEL_EXPORTER_OTLP_PROTOCOL=grpc (port 4317 on a Collector)"
        )


def _span_exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    return FastOTLPSpanExporter()


def _metric_exporter(name: str) -> MetricExporter:
    if name == "console":
        return ConsoleMetricExporter()
    return OTLPMetricExporter()


def _resource() -> Resource:
    resource = Resource.create()
    name = str(resource.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    try:
        version = metadata.version("llm-router")
    except metadata.PackageNotFoundError:
        return resource
    return resource.merge(Resource({SERVICE_VERSION: version}))


def configure_sdk(environ: Mapping[str, str], *, set_global: bool = True) -> TelemetrySdk:
    """Build the SDK's providers as the `OTEL_*` variables in `environ` ask, and (by default)
    make them the global ones, for any library instrumented against the global API."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return TelemetrySdk(description="telemetry off (OTEL_SDK_DISABLED)")
    traces = _exporter_name(environ, "traces")
    metric = _exporter_name(environ, "metrics")
    for signal, name in (("traces", traces), ("metrics", metric)):
        if name == "otlp":
            _check_protocol(environ, signal)
    if traces is None and metric is None:
        return TelemetrySdk(description="telemetry off (no OTEL exporter or endpoint set)")
    resource = _resource()
    tracer_provider = meter_provider = None
    if traces is not None:
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(traces)))
    if metric is not None:
        reader = PeriodicExportingMetricReader(_metric_exporter(metric))
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    if set_global:
        if tracer_provider is not None:
            trace.set_tracer_provider(tracer_provider)
        if meter_provider is not None:
            metrics.set_meter_provider(meter_provider)
    return TelemetrySdk(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        traces=traces,
        metrics=metric,
        description=f"telemetry: traces {traces or 'off'}, metrics {metric or 'off'}",
    )
