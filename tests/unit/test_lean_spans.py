"""Spans built by `Tracing` without the SDK's live spans: what an exporter receives must be what
the SDK's own `Tracer` would have given it, sampling included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from router_service.telemetry import NO_TRACE, Tracing
from router_service.telemetry import attributes as a
from router_service.telemetry.otlp_encoding import encode_spans
from tests.support.records import call_record

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED_PARENT = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),)
UNSAMPLED_PARENT = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-00"),)


class Kept:
    def __init__(self, provider: TracerProvider) -> None:
        self.exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider = provider
        self.tracing = Tracing(provider)

    def spans(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.exporter.get_finished_spans()}


@pytest.fixture
def kept() -> Iterator[Kept]:
    spans = Kept(TracerProvider(resource=Resource({"service.name": "lean-test"})))
    yield spans
    spans.provider.shutdown()


def test_a_span_carries_what_the_sdks_tracer_gives_its_spans(kept: Kept) -> None:
    trace = kept.tracing.start_rpc("router.v1.Router", "Route", ())
    trace.end()
    sdk_span = kept.provider.get_tracer("router_service").start_span("sdk", kind=SpanKind.SERVER)
    sdk_span.end()
    ours, theirs = kept.spans()["router.v1.Router/Route"], kept.spans()["sdk"]
    assert ours.resource is theirs.resource
    assert ours.instrumentation_scope == theirs.instrumentation_scope
    assert ours.context is not None and theirs.context is not None
    assert ours.context.trace_flags == theirs.context.trace_flags
    assert ours.context.trace_state == theirs.context.trace_state
    assert ours.context.is_remote is theirs.context.is_remote is False
    assert ours.parent is None and ours.kind is SpanKind.SERVER
    assert ours.start_time is not None and ours.end_time is not None
    assert ours.start_time <= ours.end_time
    assert dict(ours.attributes or {}) == {
        a.RPC_SYSTEM: "grpc",
        a.RPC_SERVICE: "router.v1.Router",
        a.RPC_METHOD: "Route",
    }


def test_a_step_records_its_exception_as_the_sdk_does(kept: Kept) -> None:
    trace = kept.tracing.start_rpc("router.v1.Router", "Route", ())
    error = ValueError("no headroom")
    with pytest.raises(ValueError), trace.span(a.SPAN_BUDGET_RESERVE):
        raise error
    trace.end()
    sdk_span = kept.provider.get_tracer("router_service").start_span("sdk")
    sdk_span.record_exception(error, timestamp=1)
    sdk_span.end()
    ((ours,), (theirs,)) = (kept.spans()[a.SPAN_BUDGET_RESERVE].events, kept.spans()["sdk"].events)
    assert ours.name == theirs.name == "exception"
    assert dict(ours.attributes or {}) == dict(theirs.attributes or {})
    assert kept.spans()[a.SPAN_BUDGET_RESERVE].status.status_code is StatusCode.ERROR


def test_the_callers_sampled_trace_is_continued(kept: Kept) -> None:
    trace = kept.tracing.start_rpc("router.v1.Router", "Route", SAMPLED_PARENT)
    with trace.span(a.SPAN_CLASSIFY):
        pass
    trace.end()
    rpc, classify = kept.spans()["router.v1.Router/Route"], kept.spans()[a.SPAN_CLASSIFY]
    assert rpc.context is not None and classify.context is not None
    assert f"{rpc.context.trace_id:032x}" == TRACE_ID == f"{classify.context.trace_id:032x}"
    assert rpc.parent is not None and rpc.parent.is_remote
    assert f"{rpc.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert classify.parent is not None and classify.parent.span_id == rpc.context.span_id
    assert len({rpc.context.span_id, classify.context.span_id}) == 2


def test_the_default_sampler_follows_a_caller_that_does_not_sample(kept: Kept) -> None:
    assert kept.tracing.start_rpc("router.v1.Router", "Route", UNSAMPLED_PARENT) is NO_TRACE


@pytest.mark.parametrize(
    ("sampler", "metadata", "recorded"),
    [
        (ALWAYS_OFF, (), False),
        (TraceIdRatioBased(0.0), (), False),
        (ParentBased(ALWAYS_OFF), (), False),
        (ParentBased(ALWAYS_OFF), SAMPLED_PARENT, True),
    ],
)
def test_the_providers_sampler_decides(
    sampler: ParentBased, metadata: tuple[tuple[str, str], ...], recorded: bool
) -> None:
    kept = Kept(TracerProvider(sampler=sampler))
    trace = kept.tracing.start_rpc("router.v1.Router", "Route", metadata)
    assert (trace is not NO_TRACE) is recorded
    trace.end()
    assert len(kept.spans()) == int(recorded)
    kept.provider.shutdown()


def test_background_work_starts_a_new_trace_linked_to_the_rpc(kept: Kept) -> None:
    rpc = kept.tracing.start_rpc("router.v1.Router", "Route", SAMPLED_PARENT)
    rpc.end()
    shadow = kept.tracing.start_background(a.SPAN_SHADOW, rpc, {a.APP: "demo"})
    child = shadow.child_call("shadow.answer")
    child.end()
    shadow.end()
    spans = kept.spans()
    route, background, answer = (
        spans["router.v1.Router/Route"],
        spans[a.SPAN_SHADOW],
        spans["shadow.answer"],
    )
    assert route.context is not None and background.context is not None
    assert background.context.trace_id != route.context.trace_id
    assert background.parent is None
    assert [link.context for link in background.links] == [route.context]
    assert answer.parent is not None and answer.parent.span_id == background.context.span_id
    assert dict(background.attributes or {}) == {a.APP: "demo"}


def test_with_the_sdk_disabled_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracing = Tracing(TracerProvider())
    assert not tracing.enabled
    assert tracing.start_rpc("router.v1.Router", "Route", ()) is NO_TRACE


def test_a_routed_calls_spans_encode_alike_with_both_otlp_encoders(kept: Kept) -> None:
    trace = kept.tracing.start_rpc("router.v1.Router", "Route", SAMPLED_PARENT)
    with trace.span(a.SPAN_CLASSIFY, {a.CLASSIFIER_VERSION: "v1"}):
        pass
    with pytest.raises(RuntimeError), trace.span(a.SPAN_BUDGET_RESERVE):
        raise RuntimeError("store down")
    trace.record_call(call_record())
    trace.fail(RuntimeError("upstream gone"), 14)
    trace.end()
    spans = list(kept.exporter.get_finished_spans())
    assert len(spans) == 4
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert ours == official(spans)


def test_an_ended_span_takes_no_more_changes(kept: Kept) -> None:
    trace = kept.tracing.start_rpc("router.v1.Router", "Route", ())
    trace.set(a.APP, "demo")
    trace.end()
    exported = kept.spans()["router.v1.Router/Route"]
    before = dict(exported.attributes or {})
    # What a late caller may still do; the exporter may be reading the span meanwhile.
    trace.set(a.TASK, "late")
    trace.fail(RuntimeError("late"), 13)
    trace.record_call(call_record())
    assert dict(exported.attributes or {}) == before
    assert exported.status.status_code is StatusCode.UNSET
    # The call's provider spans are still recorded, as the SDK records children of an ended span.
    assert any(name.startswith("chat ") for name in kept.spans())
