"""The fast OTLP span encoding writes what the SDK's encoder builds, and falls back to it."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from router_service.telemetry import otlp_encoding
from router_service.telemetry.otlp_encoding import FastOTLPSpanExporter, encode_spans

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

EVERY_TYPE: dict[str, Any] = {
    "str": "grpc",
    "str.empty": "",
    "str.non_ascii": "résumé ✓ 漢字 \U0001f680",
    "bool.true": True,
    "bool.false": False,
    "int.zero": 0,
    "int.small": 7,
    "int.negative": -1,
    "int.max": INT64_MAX,
    "int.min": INT64_MIN,
    "int.two_bytes": 300,
    "float": 0.1,
    "float.negative_zero": -0.0,
    "float.zero": 0.0,
    "float.large": 1.5e300,
    "bytes": b"\x00\xff\x10",
    "bytes.empty": b"",
    "seq.str": ["a", "", "é"],
    "seq.bool": [True, False],
    "seq.int": [0, -5, INT64_MAX, INT64_MIN],
    "seq.float": [0.1, -0.0, 2.5],
    "seq.bytes": [b"a", b""],
    "seq.empty": [],
}


class Spans:
    """Finished spans from real SDK tracer providers, in the order they ended."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()

    def provider(self, resource: Resource, limits: SpanLimits | None = None) -> TracerProvider:
        tracer_provider = TracerProvider(resource=resource, span_limits=limits)
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        return tracer_provider

    def finished(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()


def assert_same_request(spans: Sequence[ReadableSpan]) -> None:
    fast = encode_spans(spans)
    expected = official(spans)
    assert ExportTraceServiceRequest.FromString(fast) == expected
    # The same bytes, too: upb writes fields in field-number order, as the fast encoder does.
    assert fast == expected.SerializeToString()


def realistic_spans() -> Sequence[ReadableSpan]:
    spans = Spans()
    service = Resource(
        {"service.name": "llm-router", "service.version": "1.2.3", "host.cpu": 2},
        schema_url="https://opentelemetry.io/schemas/1.26.0",
    )
    router = spans.provider(service)
    # An equal resource in another provider: the SDK groups its spans with the first one's.
    same_service = spans.provider(Resource(dict(service.attributes), service.schema_url))
    worker = spans.provider(
        Resource({"service.name": "worker"}),
        SpanLimits(
            max_span_attributes=3,
            max_events=2,
            max_links=1,
            max_event_attributes=1,
            max_link_attributes=1,
        ),
    )
    server = router.get_tracer("router_service", "0.1.0", schema_url="https://example.com/s")
    library = router.get_tracer("httpx", attributes={"library.kind": "http", "n": 2})
    unversioned = same_service.get_tracer("router_service.budget")
    background = worker.get_tracer("calllog", "2")

    remote = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value"), ("other", "x:1")]),
    )
    with server.start_as_current_span(
        "router.v1.Router/Route",
        context=set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": "router.v1.Router"},
    ) as rpc:
        with unversioned.start_as_current_span("budget.reserve", attributes=EVERY_TYPE):
            pass
        with library.start_as_current_span("POST", kind=SpanKind.CLIENT) as call:
            call.add_event("retry", {"attempt": 2, "reason": "503", "waits": [0.1, 0.2]})
            call.add_event("no attributes")
            call.set_status(Status(StatusCode.ERROR, "upstream returned 503 ✗"))
        with server.start_as_current_span("classify") as classify:
            classify.set_status(Status(StatusCode.OK))
        for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.INTERNAL):
            with server.start_as_current_span(f"{kind.name.lower()} span", kind=kind):
                pass
        with server.start_as_current_span("error without description") as bare_error:
            bare_error.set_status(Status(StatusCode.ERROR))
        rpc.set_attribute("llm_router.cost_usd", 0.000123)

    # The SDK sets a span's limits on the Link objects it is given, so each span gets its own.
    def local_link() -> Link:
        return Link(rpc.get_span_context(), {"link.kind": "follows", "n": [1, 2]})

    with background.start_as_current_span(
        "calllog.write",
        links=[Link(remote, {"remote": True}), local_link()],
        attributes={"a": 1, "b": "two", "c": 3.0, "d": b"4", "e": [5]},
    ) as write:
        write.add_event("dropped")
        write.add_event("flushed", {"records": 10, "bytes": 2048}, timestamp=1_700_000_000)
        write.add_event("empty")
    with server.start_as_current_span(
        "shadow", context=Context(), links=[Link(remote, {"remote": True}), local_link()]
    ):
        pass
    return spans.finished()


def test_realistic_spans_encode_to_the_sdks_request() -> None:
    spans = realistic_spans()
    request = official(spans)
    # The spans cover what the test means to: two resource groups, several scopes, dropped
    # counts, remote parents and links, events and every status code.
    assert len(request.resource_spans) == 2
    assert len(request.resource_spans[0].scope_spans) == 3
    written = [s for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]
    (limited,) = [s for s in written if s.dropped_attributes_count]
    assert limited.dropped_events_count and limited.dropped_links_count
    assert limited.events[0].dropped_attributes_count
    assert limited.links[0].dropped_attributes_count
    assert {s.status.code for s in written} == {0, 1, 2}
    assert {s.flags for s in written} == {0x100, 0x300}
    assert any(s.trace_state for s in written)
    links = [link for s in written for link in s.links]
    assert {link.flags for link in links} == {0x100, 0x300}
    assert_same_request(spans)


def test_spans_of_each_batch_size_encode_to_the_sdks_request() -> None:
    spans = realistic_spans()
    assert_same_request([])
    for size in range(1, len(spans) + 1):
        assert_same_request(spans[:size])
        assert_same_request(spans[-size:])


def test_nan_and_infinities_are_written_as_the_sdk_writes_them() -> None:
    spans = Spans()
    tracer = spans.provider(Resource({})).get_tracer("t")
    values = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "seq": [math.nan, 1.0]}
    with tracer.start_as_current_span("floats", attributes=values):
        pass
    # NaN is not equal to itself, so the messages compare by their bytes only.
    assert encode_spans(spans.finished()) == official(spans.finished()).SerializeToString()


def test_more_distinct_values_than_the_encoder_remembers_encode_alike() -> None:
    spans = Spans()
    tracer = spans.provider(Resource({})).get_tracer("t")
    for i in range(40):  # 5,120 distinct strings and ints; the encoder remembers 4,096 strings
        values = {f"key.{j}": f"value {i}.{j}" if j % 2 else i * 1000 + j for j in range(128)}
        with tracer.start_as_current_span(f"span {i}", attributes=values):
            pass
    assert_same_request(spans.finished())
    # What it remembers stays bounded: values that never repeat (request ids) must not grow it.
    assert 0 < len(otlp_encoding._TEXT_ATTRIBUTES) <= 4096


SCALARS = st.one_of(
    st.text(),
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=False),
    st.binary(),
)
HOMOGENEOUS = st.one_of(
    st.lists(st.text(), max_size=4),
    st.lists(st.booleans(), max_size=4),
    st.lists(st.integers(INT64_MIN, INT64_MAX), max_size=4),
    st.lists(st.floats(allow_nan=False), max_size=4),
    st.lists(st.binary(), max_size=4),
)
# The SDK (1.45) also keeps None in sequences, mixed and nested sequences, and mappings.
NESTED = st.recursive(
    st.one_of(SCALARS, st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1), inner, max_size=3)
    ),
    max_leaves=8,
)
ATTRIBUTES = st.dictionaries(
    st.text(min_size=1), st.one_of(SCALARS, HOMOGENEOUS, NESTED), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(
    span_attributes=ATTRIBUTES,
    event_attributes=ATTRIBUTES,
    resource_attributes=st.dictionaries(st.text(min_size=1), SCALARS, max_size=4),
)
def test_random_attributes_encode_to_the_sdks_request(
    span_attributes: Mapping[str, Any],
    event_attributes: Mapping[str, Any],
    resource_attributes: Mapping[str, Any],
) -> None:
    spans = Spans()
    tracer = spans.provider(Resource(resource_attributes)).get_tracer("random")
    with tracer.start_as_current_span("random", attributes=span_attributes) as span:
        span.add_event("event", event_attributes)
    assert_same_request(spans.finished())


def logged_by_the_encoder(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == otlp_encoding.__name__]


@pytest.fixture
def exporter() -> Iterator[FastOTLPSpanExporter]:
    fast = FastOTLPSpanExporter(endpoint="127.0.0.1:1", insecure=True)
    yield fast
    fast.shutdown()


def test_the_exporter_sends_the_sdks_request(
    exporter: FastOTLPSpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    spans = realistic_spans()
    assert exporter._translate_data(spans) == official(spans)
    assert not logged_by_the_encoder(caplog)


def test_the_exporter_falls_back_to_the_sdks_encoder_and_warns_once(
    exporter: FastOTLPSpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(spans: Sequence[ReadableSpan]) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setattr(otlp_encoding, "encode_spans", broken)
    spans = realistic_spans()
    with caplog.at_level(logging.WARNING, logger=otlp_encoding.__name__):
        assert exporter._translate_data(spans) == official(spans)
        assert exporter._translate_data(spans) == official(spans)
    (warning,) = logged_by_the_encoder(caplog)
    assert warning.levelno == logging.WARNING
    assert "RuntimeError: boom" in warning.getMessage()


def test_a_value_the_sdk_drops_is_dropped_through_the_fallback(
    exporter: FastOTLPSpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    spans = Spans()
    tracer = spans.provider(Resource({})).get_tracer("t")
    with tracer.start_as_current_span("big", attributes={"too.big": 2**64, "fine": 1}):
        pass
    with pytest.raises(ValueError, match="outside int64"):
        encode_spans(spans.finished())
    # The SDK's encoder logs the attribute it drops at ERROR, with its traceback.
    with caplog.at_level(logging.CRITICAL, logger="opentelemetry"):
        request = exporter._translate_data(spans.finished())
    (span,) = request.resource_spans[0].scope_spans[0].spans
    assert [kv.key for kv in span.attributes] == ["fine"]
