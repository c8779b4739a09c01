"""What encoding spans for OTLP costs: the SDK's encoder against `telemetry.otlp_encoding`.

Method: 200 routed calls' worth of spans (1,000: each call's server span, classify,
budget.reserve, the GenAI chat client span and budget.settle), made by the router's own
`Tracing` from call records whose ids, token counts, cost and times differ from call to call,
under the resource `llm-router serve` sets up, are encoded in the batches the
`BatchSpanProcessor` hands its exporter (512 spans at most) by

- sdk: the SDK's `encode_spans`, the message its OTLP exporter sends;
- fast: `otlp_encoding.encode_spans`, the bytes alone;
- fast+parse: those bytes parsed into the message, what `FastOTLPSpanExporter` sends.

The fast message is first checked to equal the SDK's. The three then run in interleaved rounds
(after one warm-up round that is not counted), so drift and other load on a shared machine hit
them alike; each figure is the median over rounds of process CPU time per span.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from router_service.cost import Usage
from router_service.telemetry import Tracing
from router_service.telemetry import attributes as a
from router_service.telemetry.otlp_encoding import encode_spans

RESULTS = Path(__file__).parent / "results" / "otlp_encoding.json"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
CALLS = 200
BATCH = 512  # the BatchSpanProcessor's default max_export_batch_size
METADATA = (
    ("authorization", "Bearer demo-key"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
)


def router_spans(calls: int) -> list[ReadableSpan]:
    """The five spans of each of `calls` routed calls, as the router makes them."""
    from tests.support.records import call_record

    exporter = InMemorySpanExporter()
    resource = Resource.create({SERVICE_NAME: "llm-router", SERVICE_VERSION: "0.1.0"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    for i in range(calls):
        # Values that differ from call to call do, so no cache is flattered by repeats.
        record = call_record(
            request_id=f"req-{i:08x}",
            started_at=1_746_100_800.25 + i,
            usage=Usage(input_tokens=900 + 7 * i, cached_input_tokens=4 * i, output_tokens=80 + i),
            cost_micro_usd=420 + 3 * i,
            ttft_ms=210.5 + i / 7,
            latency_ms=1100.0 + i,
            overhead_ms=0.8 + i / 1000,
        )
        trace = tracing.start_rpc("router.v1.Router", "Route", METADATA)
        with trace.span(a.SPAN_CLASSIFY) as span:
            span.set_attribute(a.DIFFICULTY, 0.31 + i / 1000)
            span.set_attribute(a.CLASSIFIER_VERSION, "test-1")
        trace.set_decision(record.decision, record.request_id)
        with trace.span(a.SPAN_BUDGET_RESERVE):
            pass
        trace.record_call(record)
        trace.end()
        with trace.span(a.SPAN_BUDGET_SETTLE):
            pass
    provider.shutdown()
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 5 * calls, len(spans)
    return spans


def cpu_us_per_span(
    encode: Callable[[Sequence[ReadableSpan]], object], batches: list[list[ReadableSpan]]
) -> float:
    spans = sum(len(batch) for batch in batches)
    start = time.process_time_ns()
    for batch in batches:
        encode(batch)
    return (time.process_time_ns() - start) / spans / 1000


def fast_message(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encode_spans(spans))


def shape(span: ReadableSpan) -> str:
    name = span.name
    if name.startswith("router.v1."):
        return "server"
    return "chat" if name.startswith(a.OPERATION_CHAT) else name


def measure() -> dict[str, object]:
    spans = router_spans(CALLS)
    workloads = {"all": [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]}
    for span in spans:
        workloads.setdefault(shape(span), [[]])[0].append(span)
    for batch in workloads["all"]:
        assert fast_message(batch) == sdk_encode(batch)
    encoders: dict[str, Callable[[Sequence[ReadableSpan]], object]] = {
        "sdk": sdk_encode,
        "fast": encode_spans,
        "fast+parse": fast_message,
    }
    rounds: dict[str, dict[str, list[float]]] = {
        workload: {name: [] for name in encoders} for workload in workloads
    }
    for round_number in range(ROUNDS + 1):
        for workload, batches in workloads.items():
            for name, encode in encoders.items():
                us = cpu_us_per_span(encode, batches)
                if round_number:
                    rounds[workload][name].append(us)
    median = {
        workload: {name: statistics.median(values) for name, values in by_encoder.items()}
        for workload, by_encoder in rounds.items()
    }
    every = median["all"]
    return {
        "method": (
            f"{len(spans)} router spans ({CALLS} calls x 5) in batches of {BATCH}, and each "
            f"span shape alone; {ROUNDS} interleaved rounds after a warm-up; process CPU µs "
            "per span, median over rounds"
        ),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "bytes_per_span": round(sum(len(encode_spans(b)) for b in workloads["all"]) / len(spans)),
        "cpu_us_per_span": {name: round(us, 2) for name, us in every.items()},
        "sdk_over_fast": round(every["sdk"] / every["fast"], 2),
        "sdk_over_fast_parse": round(every["sdk"] / every["fast+parse"], 2),
        "by_shape": {
            workload: {
                "attributes": len(workloads[workload][0][0].attributes or {}),
                **{name: round(us, 2) for name, us in by_encoder.items()},
                "sdk_over_fast_parse": round(by_encoder["sdk"] / by_encoder["fast+parse"], 2),
            }
            for workload, by_encoder in median.items()
            if workload != "all"
        },
        "cpu_us_per_span_rounds": {
            name: [round(us, 2) for us in values] for name, values in rounds["all"].items()
        },
    }


def main() -> None:
    results = measure()
    print(results["method"])
    print(results["machine"])
    for name, us in results["cpu_us_per_span"].items():  # type: ignore[attr-defined]
        print(f"{name:<12}{us:>8.2f} µs/span")
    print(f"sdk / fast        {results['sdk_over_fast']}x")
    print(f"sdk / fast+parse  {results['sdk_over_fast_parse']}x")
    print("by span shape (attributes): sdk, fast+parse µs/span")
    for name, s in results["by_shape"].items():  # type: ignore[attr-defined]
        print(f"  {name:<15}({s['attributes']:>2}) {s['sdk']:>8.2f} {s['fast+parse']:>8.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
