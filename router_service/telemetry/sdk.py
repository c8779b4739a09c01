"""Sets up the OpenTelemetry SDK once, at the edge, from the standard `OTEL_*` variables.

Only `llm-router serve` calls `configure_sdk`; everything else uses the API and is handed the
providers built here. What is honoured:

- `OTEL_SDK_DISABLED=true`: no SDK at all.
- `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER`: `otlp` (default), `console`, both
  (`otlp,console`) or `none`.
- `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal `..._TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`):
  where OTLP goes. When neither an endpoint nor an exporter is set, that signal stays off, so an
  unconfigured service pays next to nothing for telemetry instead of retrying against a
  collector that is not there.
- `OTEL_EXPORTER_OTLP_PROTOCOL` (and per signal): `grpc` (default; a Collector's port 4317)
  or `http/protobuf` (port 4318). Over gRPC, spans go through the SDK's OTLP/gRPC exporter
  with its encoder swapped for `otlp_encoding`'s, which writes the same request for a fraction
  of the CPU; over HTTP, through the SDK's OTLP/HTTP exporter.
- Everything else (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
  `..._INSECURE`, `..._TIMEOUT`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`,
  `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_PROPAGATORS`) is read by the SDK itself.
"""

from __future__ import annotations

import asyncio
import threading
import time
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
_PROTOCOLS = {"grpc", "http/protobuf"}


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

    async def close(self, timeout_s: float) -> bool:
        """`shutdown` for at most `timeout_s`; False if it had not finished by then. An
        exporter whose collector is gone retries for its own timeout (10 s by default), which
        would hold up the process's exit; each signal shuts down on a daemon thread of its own
        (a slow trace export does not keep the metrics from their flush), so that the process
        can exit without them."""
        providers = [p for p in (self.tracer_provider, self.meter_provider) if p is not None]
        done = [threading.Event() for _ in providers]

        def shut(provider: TracerProvider | MeterProvider, finished: threading.Event) -> None:
            try:
                provider.shutdown()
            finally:
                finished.set()

        for provider, finished in zip(providers, done, strict=True):
            name = f"{type(provider).__name__}-shutdown"
            threading.Thread(target=shut, args=(provider, finished), name=name, daemon=True).start()
        deadline = time.monotonic() + timeout_s

        def wait_all() -> bool:
            return all(event.wait(max(deadline - time.monotonic(), 0.0)) for event in done)

        return await asyncio.to_thread(wait_all)


def _exporter_names(environ: Mapping[str, str], signal: str) -> tuple[str, ...]:
    """The exporters for `signal` ("traces" or "metrics"); none when the signal is off."""
    chosen = environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
    )
    if not chosen:
        return ("otlp",) if endpoint else ()
    names = tuple(dict.fromkeys(n.strip() for n in chosen.split(",") if n.strip() != "none"))
    unknown = [n for n in names if n not in {"otlp", "console"}]
    if unknown:
        raise ConfigError(
            f"OTEL_{signal.upper()}_EXPORTER={chosen!r}: the service ships the exporters "
            "otlp, console and none"
        )
    return names


def _protocol(environ: Mapping[str, str], signal: str) -> str:
    protocol = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    protocol = protocol.strip().lower()
    if protocol not in _PROTOCOLS:
        raise ConfigError(
            f"OTLP protocol {protocol!r} for {signal}: the service exports OTLP over grpc "
            "(port 4317 on a Collector) or http/protobuf (port 4318)"
        )
    return protocol


def _span_exporter(name: str, protocol: str = "grpc") -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if protocol == "http/protobuf":
        # Imported only when asked for: it pulls in `requests`, which start-up need not pay for.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        return OTLPSpanExporter()
    return FastOTLPSpanExporter()


def _metric_exporter(name: str, protocol: str = "grpc") -> MetricExporter:
    if name == "console":
        return ConsoleMetricExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter as OTLPHttpMetricExporter,
        )

        return OTLPHttpMetricExporter()
    return OTLPMetricExporter()


def _named(names: tuple[str, ...], protocol: str) -> str | None:
    """How the description and `TelemetrySdk` name a signal's exporters."""
    if not names:
        return None
    over = f" ({protocol})" if protocol != "grpc" else ""
    return ",".join(f"{n}{over}" if n == "otlp" else n for n in names)


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
    span_exporters = _exporter_names(environ, "traces")
    metric_exporters = _exporter_names(environ, "metrics")
    span_protocol = _protocol(environ, "traces") if "otlp" in span_exporters else "grpc"
    metric_protocol = _protocol(environ, "metrics") if "otlp" in metric_exporters else "grpc"
    traces = _named(span_exporters, span_protocol)
    metric = _named(metric_exporters, metric_protocol)
    if traces is None and metric is None:
        return TelemetrySdk(description="telemetry off (no OTEL exporter or endpoint set)")
    resource = _resource()
    tracer_provider = meter_provider = None
    # No exit hooks: an exporter whose collector is gone would hold the exit up for its whole
    # retry timeout there. Whoever configures the SDK closes it (`TelemetrySdk.close`, bounded).
    if span_exporters:
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for name in span_exporters:
            exporter = _span_exporter(name, span_protocol)
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    if metric_exporters:
        readers = [
            PeriodicExportingMetricReader(_metric_exporter(name, metric_protocol))
            for name in metric_exporters
        ]
        meter_provider = MeterProvider(
            resource=resource, metric_readers=readers, shutdown_on_exit=False
        )
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
