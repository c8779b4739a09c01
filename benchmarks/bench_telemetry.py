"""What telemetry and the call log cost per request, on vs off, measured side by side.

Method: one process runs an in-process router on the embedded defaults with simulated
providers that answer at once, and a gRPC client that routes requests one after another over
loopback. Answers are short (20 streamed chunks): telemetry costs per call, not per chunk, so
short answers make its share stand out (typical answers are several times longer). Five
set-ups are measured in interleaved rounds (A B C D E, A B C D E, ...), after one warm-up
round that is not counted, so drift and noise on a shared machine hit them alike; each figure
is the median over rounds of the process CPU time (user + system, all threads: gRPC, the SDK's
export threads, the call-log writer) per request, and of wall time per request.

- off: no SDK, no call log (what an unconfigured service pays: the no-op trace).
- sdk: traces and metrics through the SDK (batch span processor, periodic metric reader)
  into exporters that discard: the cost of building spans and recording metrics.
- otlp: the same with the real OTLP/gRPC exporters sending to a receiver in a child process
  (its CPU is not counted): adds serialization and the wire.
- calllog: the call log alone (JSONL to a temporary directory).
- all: otlp and the call log together.

Micro-benchmarks time the per-call pieces alone: `CallLog.observe` (the enqueue on the request
path), `RouterMetrics.observe`, building a call's spans from its record, and the no-op trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grpc import aio
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from router_service._proto import router_pb2 as pb
from router_service._proto import router_pb2_grpc
from router_service.calllog import build_call_log
from router_service.config import CallLogConfig, RouterConfig, load_config
from router_service.server import RouterServer
from router_service.telemetry import RouterMetrics, Tracing

RESULTS = Path(__file__).parent / "results" / "telemetry.json"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "100"))
ANSWER_CHUNKS = 20
WARMUP = 30
METADATA = (("authorization", "Bearer demo-key"),)


class DiscardSpans(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class DiscardMetrics(MetricExporter):
    def __init__(self) -> None:
        super().__init__(preferred_temporality={})

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def fast_config(call_log_dir: Path | None) -> RouterConfig:
    """The embedded defaults with instant simulated providers, no exploration or shadow."""
    raw = load_config().model_dump(mode="python")
    for provider in raw["providers"].values():
        provider.update(ttft_ms=0, tokens_per_second=1_000_000, answer_tokens=ANSWER_CHUNKS)
    raw["exploration"].update(rate=0.0, shadow_rate=0.0)
    raw["call_log"].update(enabled=call_log_dir is not None, directory=call_log_dir or "unused")
    return RouterConfig.model_validate(raw)


def providers(kind: str, endpoint: str) -> tuple[TracerProvider | None, MeterProvider | None]:
    if kind == "off":
        return None, None
    otlp = kind == "otlp"
    tracer = TracerProvider()
    spans: SpanExporter = (
        OTLPSpanExporter(endpoint=endpoint, insecure=True) if otlp else DiscardSpans()
    )
    tracer.add_span_processor(BatchSpanProcessor(spans, schedule_delay_millis=500))
    exporter: MetricExporter = (
        OTLPMetricExporter(endpoint=endpoint, insecure=True) if otlp else DiscardMetrics()
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=1000)
    return tracer, MeterProvider(metric_readers=[reader])


class Setup:
    def __init__(self, name: str, telemetry: str, call_log: bool, endpoint: str) -> None:
        self.name = name
        self.telemetry = telemetry
        self.call_log = call_log
        self.endpoint = endpoint
        self.cpu_us: list[float] = []
        self.wall_us: list[float] = []

    async def run_round(self, requests: int, *, record: bool = True) -> None:
        with tempfile.TemporaryDirectory() as directory:
            tracer, meter = providers(self.telemetry, self.endpoint)
            config = fast_config(Path(directory) if self.call_log else None)
            server = RouterServer(config, environ={}, tracer_provider=tracer, meter_provider=meter)
            port = await server.start("127.0.0.1:0")
            try:
                async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    router = router_pb2_grpc.RouterStub(channel)
                    for i in range(WARMUP):
                        await route(router, i)
                    cpu, wall = time.process_time(), time.perf_counter()
                    for i in range(requests):
                        await route(router, i)
                    if record:
                        self.cpu_us.append((time.process_time() - cpu) / requests * 1e6)
                        self.wall_us.append((time.perf_counter() - wall) / requests * 1e6)
            finally:
                await server.stop(grace=1)
                for provider in (tracer, meter):
                    if provider is not None:
                        await asyncio.to_thread(provider.shutdown)


async def route(router: Any, i: int) -> None:
    request = pb.RouteRequest(
        task="summarization",
        messages=[
            pb.Message(role="user", content=f"Summarize incident report {i} in three bullets.")
        ],
    )
    async for _ in router.Route(request, metadata=METADATA):
        pass


def micro(fn: Callable[[], object], number: int = 20_000) -> float:
    """Median wall ns per call over 5 repeats."""
    runs = []
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter_ns() - start) / number)
    return statistics.median(runs)


async def micro_benchmarks() -> dict[str, float]:
    from tests.support.records import call_record

    record = call_record(prompt=(("user", "Summarize incident report 7 in three bullets."),))
    with tempfile.TemporaryDirectory() as directory:
        log = build_call_log(
            CallLogConfig(directory=Path(directory), queue_size=10_000_000), redis=None
        )
        enqueue = micro(lambda: log.observe(record), 200_000)
    meter = MeterProvider(metric_readers=[PeriodicExportingMetricReader(DiscardMetrics(), 60_000)])
    metrics = RouterMetrics(meter)
    metrics_ns = micro(lambda: metrics.observe(record))
    tracer = TracerProvider()
    tracer.add_span_processor(BatchSpanProcessor(DiscardSpans(), max_queue_size=1_000_000))

    def one_call(tracing: Tracing) -> Callable[[], None]:
        def call() -> None:
            trace = tracing.start_rpc("router.v1.Router", "Route", METADATA)
            trace.record_call(record)
            trace.end()

        return call

    spans_ns = micro(one_call(Tracing(tracer)), 5_000)
    noop_ns = micro(one_call(Tracing(None)), 200_000)
    await asyncio.to_thread(tracer.shutdown)
    await asyncio.to_thread(meter.shutdown)
    return {
        "calllog_enqueue_ns": enqueue,
        "metrics_observe_ns": metrics_ns,
        "spans_per_call_ns": spans_ns,
        "noop_trace_per_call_ns": noop_ns,
    }


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    """An OTLP/gRPC receiver in a child process, so its CPU is not counted here."""
    code = (
        "import asyncio, sys\n"
        "from tests.support.otlp_receiver import otlp_receiver\n"
        "async def main():\n"
        "    async with otlp_receiver() as (endpoint, _):\n"
        "        print(endpoint, flush=True)\n"
        "        await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent
    )
    assert child.stdout is not None
    endpoint = child.stdout.readline().decode().strip()
    return child, endpoint


async def measure() -> dict[str, Any]:
    receiver, endpoint = start_receiver()
    try:
        setups = [
            Setup("off", "off", False, endpoint),
            Setup("sdk", "sdk", False, endpoint),
            Setup("otlp", "otlp", False, endpoint),
            Setup("calllog", "off", True, endpoint),
            Setup("all", "otlp", True, endpoint),
        ]
        for setup in setups:
            await setup.run_round(REQUESTS, record=False)
        for _ in range(ROUNDS):
            for setup in setups:
                await setup.run_round(REQUESTS)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    off = setups[0]

    def paired(values: list[float], base: list[float], ratio: bool) -> float:
        """Median over rounds of this set-up against `off` in the same round."""
        pairs = zip(values, base, strict=True)
        return statistics.median([v / b if ratio else v - b for v, b in pairs])

    per_setup = {
        s.name: {
            "cpu_us_per_request": round(statistics.median(s.cpu_us), 1),
            "cpu_ratio_to_off": round(paired(s.cpu_us, off.cpu_us, ratio=True), 3),
            "cpu_added_us": round(paired(s.cpu_us, off.cpu_us, ratio=False), 1),
            "wall_us_per_request": round(statistics.median(s.wall_us), 1),
            "wall_ratio_to_off": round(paired(s.wall_us, off.wall_us, ratio=True), 3),
            "cpu_us_rounds": [round(x, 1) for x in s.cpu_us],
        }
        for s in setups
    }
    return {
        "method": (
            f"in-process router, loopback gRPC client, {ANSWER_CHUNKS}-chunk simulated answers; "
            f"{ROUNDS} interleaved rounds x {REQUESTS} sequential requests per set-up; "
            "process CPU time per request: median over rounds, and median of per-round "
            "ratios and differences against 'off'"
        ),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "setups": per_setup,
        "micro_ns": {k: round(v, 1) for k, v in (await micro_benchmarks()).items()},
    }


def main() -> None:
    results = asyncio.run(measure())
    print(results["method"])
    print(results["machine"])
    header = ("set-up", "CPU us/req", "x off", "added us", "wall us/req", "x off")
    print("{:<10}{:>12}{:>8}{:>10}{:>13}{:>8}".format(*header))
    for name, s in results["setups"].items():
        print(
            f"{name:<10}{s['cpu_us_per_request']:>12.1f}{s['cpu_ratio_to_off']:>8.3f}"
            f"{s['cpu_added_us']:>10.1f}{s['wall_us_per_request']:>13.1f}{s['wall_ratio_to_off']:>8.3f}"
        )
    for name, ns in results["micro_ns"].items():
        print(f"{name:<26}{ns:>10.0f} ns")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
