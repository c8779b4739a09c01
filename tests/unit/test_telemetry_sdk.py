"""SDK set-up from the standard OTEL_* variables."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import TracerProvider

from router_service.config import ConfigError
from router_service.telemetry.otlp_encoding import FastOTLPSpanExporter
from router_service.telemetry.sdk import TelemetrySdk, _span_exporter, configure_sdk

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}


def configured(environ: dict[str, str]) -> TelemetrySdk:
    return configure_sdk(environ, set_global=False)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "router"},
        {**ENDPOINT, "OTEL_SDK_DISABLED": "true"},
        {**ENDPOINT, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
    ],
)
def test_nothing_is_set_up_when_nothing_asks_for_it(environ: dict[str, str]) -> None:
    sdk = configured(environ)
    assert sdk.tracer_provider is None and sdk.meter_provider is None
    assert sdk.description.startswith("telemetry off")


def test_service_name_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "router-eu")
    sdk = configured(ENDPOINT)
    try:
        assert sdk.tracer_provider is not None
        assert sdk.tracer_provider.resource.attributes[SERVICE_NAME] == "router-eu"
    finally:
        sdk.shutdown()


def test_an_endpoint_turns_on_otlp_for_both_signals() -> None:
    sdk = configured(ENDPOINT)
    try:
        assert (sdk.traces, sdk.metrics) == ("otlp", "otlp")
        assert sdk.meter_provider is not None
        assert sdk.tracer_provider is not None
        assert sdk.tracer_provider.resource.attributes[SERVICE_NAME] == "llm-router"
    finally:
        sdk.shutdown()


def test_each_signal_is_chosen_on_its_own() -> None:
    sdk = configured({**ENDPOINT, "OTEL_METRICS_EXPORTER": "none"})
    try:
        assert sdk.tracer_provider is not None and sdk.meter_provider is None
        assert (sdk.traces, sdk.metrics) == ("otlp", None)
    finally:
        sdk.shutdown()
    sdk = configured({"OTEL_TRACES_EXPORTER": "console"})
    try:
        assert (sdk.traces, sdk.metrics) == ("console", None)
        assert sdk.tracer_provider is not None and sdk.meter_provider is None
    finally:
        sdk.shutdown()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "otlp, console and none"),
        ({"OTEL_TRACES_EXPORTER": "otlp,zipkin"}, "otlp, console and none"),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "grpc .* or http/protobuf"),
    ],
)
def test_unsupported_choices_are_config_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        configured(environ)


def test_otlp_spans_go_through_the_fast_encoder() -> None:
    exporter = _span_exporter("otlp")
    try:
        assert isinstance(exporter, FastOTLPSpanExporter)
    finally:
        exporter.shutdown()


def test_both_exporters_and_the_http_protocol_can_be_chosen() -> None:
    sdk = configured(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp,console",
        }
    )
    try:
        assert sdk.traces == "otlp (http/protobuf),console"
        assert sdk.metrics == "otlp (http/protobuf)"
    finally:
        sdk.shutdown()
    # A per-signal protocol wins over the general one.
    sdk = configured({**ENDPOINT, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"})
    try:
        assert (sdk.traces, sdk.metrics) == ("otlp", "otlp (http/protobuf)")
    finally:
        sdk.shutdown()


class StuckProvider(TracerProvider):
    """A provider whose exporter cannot flush: its shutdown waits until told to go on."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def shutdown(self) -> None:
        self.release.wait(10)
        super().shutdown()


async def test_closing_is_bounded_when_an_exporter_cannot_flush() -> None:
    provider = StuckProvider()
    started = time.monotonic()
    assert not await TelemetrySdk(tracer_provider=provider).close(0.2)
    assert time.monotonic() - started < 2
    provider.release.set()


async def test_closing_reports_a_finished_shutdown() -> None:
    assert await TelemetrySdk(tracer_provider=TracerProvider()).close(5)
