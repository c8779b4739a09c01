"""Spans: one server span per RPC, child spans for its steps, a GenAI client span per provider
attempt.

Only the OpenTelemetry API is used here; the composition root hands in a `TracerProvider` (the
SDK's, set up once at the edge by `telemetry.sdk`) or nothing, and with nothing every trace is
`NO_TRACE`, whose methods do nothing: telemetry off costs a few attribute lookups per call.

Parents are passed explicitly, never taken from the ambient context. `Route` is an async
generator that grpc.aio drives across many `yield`s, and a context attached before a `yield`
may be detached from another context (a cancelled or garbage-collected generator), which
corrupts the ambient context. So a `CallTrace` carries its own context, and its step spans are
never made current.

Provider spans are built when the call ends, from its `CallRecord`: the record holds every
attempt with its outcome and duration, the usage and the cost, which is everything the GenAI
conventions ask for; attempts run one after another, so their start times follow from the
call's start and the durations before them.

Step spans (classify, budget reserve) are timed where they happen but built when the RPC's
span ends: the SDK's span machinery (ids, sampling, locks, the processor queue) costs tens of
microseconds a span, which the request path would otherwise pay before the first token.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from router_service.cost import micro_to_usd
from router_service.fallback import AttemptOutcome, AttemptRecord
from router_service.policy import Decision
from router_service.records import CallRecord, CallStatus
from router_service.telemetry import attributes as a

__all__ = ["NO_TRACE", "CallTrace", "StepSpan", "Tracing"]

Metadata = Iterable[tuple[str, str | bytes]]

_SCOPE = "router_service"
_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000


class _MetadataGetter(Getter[Sequence[tuple[str, str | bytes]]]):
    """Reads W3C trace context (`traceparent`, `tracestate`, `baggage`) from gRPC metadata."""

    def get(self, carrier: Sequence[tuple[str, str | bytes]], key: str) -> list[str] | None:
        values = [v for k, v in carrier if k == key and isinstance(v, str)]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, str | bytes]]) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


class StepSpan(Protocol):
    """What a step inside `CallTrace.span` may do with its span."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...


@dataclass(slots=True)
class _Step:
    """A step span timed on the request path, built when the RPC's span ends."""

    name: str
    attributes: dict[str, AttributeValue]
    start_ns: int = field(default_factory=time.time_ns)
    end_ns: int = 0
    error: BaseException | None = None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value


class CallTrace:
    """The trace of one RPC (or one background job). This base class records nothing: it is
    what every call gets when tracing is off or the call was not sampled."""

    __slots__ = ()

    def span(
        self, name: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> AbstractContextManager[StepSpan]:
        """A child span timing the `with` block; an exception leaving the block is recorded on
        it. Built by the SDK when this trace ends (at once if it has ended)."""
        return nullcontext(trace.INVALID_SPAN)

    def set(self, key: str, value: AttributeValue) -> None:
        """An attribute of the RPC's span."""

    def set_decision(self, decision: Decision, request_id: str) -> None:
        """Where the call is going, as soon as it is decided."""

    def record_call(self, record: CallRecord) -> None:
        """The finished call: its outcome on this span, and one client span per attempt."""

    def fail(self, error: BaseException, grpc_code: int) -> None:
        """The RPC ends with an error status."""

    def child_call(self, name: str) -> CallTrace:
        """A trace for a call made on behalf of this one, under a child span."""
        return self

    def end(self) -> None:
        """End the span; later calls do nothing."""


NO_TRACE = CallTrace()


class _RecordingTrace(CallTrace):
    __slots__ = ("_context", "_decided", "_ended", "_span", "_steps", "_tracer")

    def __init__(self, tracer: Tracer, span: Span) -> None:
        self._tracer = tracer
        self._span = span
        self._context = trace.set_span_in_context(span)
        self._decided = False
        self._ended = False
        self._steps: list[_Step] = []

    @contextmanager
    def span(
        self, name: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> Iterator[StepSpan]:
        step = _Step(name, dict(attributes or {}))
        try:
            yield step
        except BaseException as exc:
            step.error = exc
            raise
        finally:
            step.end_ns = time.time_ns()
            if self._ended:
                self._build(step)
            else:
                self._steps.append(step)

    def _build(self, step: _Step) -> None:
        span = self._tracer.start_span(
            step.name, context=self._context, start_time=step.start_ns, attributes=step.attributes
        )
        if step.error is not None:
            # As the SDK's `start_as_current_span` records an exception leaving its block.
            span.record_exception(step.error, timestamp=step.end_ns)
            span.set_status(Status(StatusCode.ERROR, f"{type(step.error).__name__}: {step.error}"))
        span.end(end_time=step.end_ns)

    def set(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def set_decision(self, decision: Decision, request_id: str) -> None:
        self._span.set_attributes(_decision_attributes(decision, request_id))
        self._decided = True

    def record_call(self, record: CallRecord) -> None:
        span = self._span
        if not self._decided:
            self.set_decision(record.decision, record.request_id)
        span.set_attributes(
            {
                a.APP: record.app,
                a.COST_USD: micro_to_usd(record.cost_micro_usd),
                a.SERVED_FROM_CACHE: record.served_from_cache,
                a.PROMPT_CACHE_HIT: record.prompt_cache_hit,
                a.STATUS: record.status,
            }
        )
        if record.model:
            span.set_attribute(a.MODEL, record.model)
        if record.ttft_ms is not None:
            span.set_attribute(a.TTFT_MS, record.ttft_ms)
        if record.overhead_ms is not None:
            span.set_attribute(a.OVERHEAD_MS, record.overhead_ms)
        self._attempt_spans(record)

    def _attempt_spans(self, record: CallRecord) -> None:
        start_ns = int(record.started_at * _NS_PER_S)
        end_ns = start_ns + int(record.latency_ms * _NS_PER_MS)
        at = start_ns
        attempts = record.attempts
        serving_recorded = bool(attempts) and attempts[-1].outcome in (
            AttemptOutcome.SUCCEEDED,
            AttemptOutcome.BROKEN,
        )
        failed = attempts[:-1] if serving_recorded else attempts
        for attempt in failed:
            if attempt.outcome is AttemptOutcome.SKIPPED:
                continue
            finish = at + int(attempt.latency_ms * _NS_PER_MS)
            span = self._attempt_span(record, attempt.model, attempt.provider, at, attempt)
            span.set_attribute(a.COST_USD, 0.0)
            span.end(end_time=finish)
            at = finish
        if record.model and not record.served_from_cache:
            # The serving attempt ran from the end of the failed ones to the end of the call;
            # when the caller went away mid-answer it has no attempt record of its own.
            serving = attempts[-1] if serving_recorded else None
            self._serving_span(record, serving, at, max(at, end_ns))

    def _serving_span(
        self, record: CallRecord, attempt: AttemptRecord | None, start_ns: int, end_ns: int
    ) -> None:
        span = self._attempt_span(record, record.model, record.provider, start_ns, attempt)
        usage = record.usage
        span.set_attributes(
            {
                a.GEN_AI_RESPONSE_MODEL: record.response_model or record.model,
                a.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
                a.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
                a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: usage.cached_input_tokens,
                a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: usage.cache_write_tokens,
                a.COST_USD: micro_to_usd(record.cost_micro_usd),
                a.PROMPT_CACHE_HIT: record.prompt_cache_hit,
            }
        )
        if record.status == CallStatus.OK:
            span.set_attribute(a.GEN_AI_RESPONSE_FINISH_REASONS, (record.finish_reason,))
        elif attempt is None:
            span.set_attribute(a.ATTEMPT_OUTCOME, record.status)
        span.end(end_time=end_ns)

    def _attempt_span(
        self,
        record: CallRecord,
        model: str,
        provider: str,
        start_ns: int,
        attempt: AttemptRecord | None,
    ) -> Span:
        """A GenAI client span for one attempt, started at `start_ns`; the caller ends it."""
        span = self._tracer.start_span(
            f"{a.OPERATION_CHAT} {model}",
            context=self._context,
            kind=SpanKind.CLIENT,
            start_time=start_ns,
            attributes={
                a.GEN_AI_OPERATION_NAME: a.OPERATION_CHAT,
                a.GEN_AI_PROVIDER_NAME: provider,
                a.GEN_AI_REQUEST_MODEL: model,
                a.GEN_AI_REQUEST_MAX_TOKENS: record.decision.max_output_tokens,
                a.APP: record.app,
                a.TIER: record.decision.tier.value,
            },
        )
        if attempt is not None:
            span.set_attribute(a.ATTEMPT_OUTCOME, attempt.outcome.value)
            if attempt.outcome in (AttemptOutcome.FAILED, AttemptOutcome.BROKEN):
                span.set_attribute(a.ERROR_TYPE, attempt.outcome.value)
                span.set_status(Status(StatusCode.ERROR, attempt.error))
        return span

    def fail(self, error: BaseException, grpc_code: int) -> None:
        self._span.set_attribute(a.RPC_GRPC_STATUS_CODE, grpc_code)
        self._span.set_attribute(a.ERROR_TYPE, type(error).__name__)
        self._span.set_status(Status(StatusCode.ERROR, str(error)))

    def child_call(self, name: str) -> CallTrace:
        return _RecordingTrace(self._tracer, self._tracer.start_span(name, context=self._context))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            for step in self._steps:
                self._build(step)
            self._steps.clear()
            self._span.end()


def _decision_attributes(decision: Decision, request_id: str) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {
        a.REQUEST_ID: request_id,
        a.TASK: decision.task,
        a.TIER: decision.tier.value,
        a.ARM: decision.arm,
        a.PROPENSITY: decision.propensity,
    }
    if decision.difficulty is not None:
        out[a.DIFFICULTY] = decision.difficulty
    if decision.threshold is not None:
        out[a.THRESHOLD] = decision.threshold
    if decision.classifier_version:
        out[a.CLASSIFIER_VERSION] = decision.classifier_version
    return out


class Tracing:
    """Starts traces. Built once by the composition root; `provider=None` turns tracing off."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._tracer = (
            None if provider is None else trace.get_tracer(_SCOPE, tracer_provider=provider)
        )

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start_rpc(self, service: str, method: str, metadata: Metadata | None) -> CallTrace:
        """The server span of one RPC, continuing the caller's trace from its metadata."""
        tracer = self._tracer
        if tracer is None:
            return NO_TRACE
        parent = propagate.extract(tuple(metadata or ()), getter=_GETTER)
        span = tracer.start_span(
            f"{service}/{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={a.RPC_SYSTEM: "grpc", a.RPC_SERVICE: service, a.RPC_METHOD: method},
        )
        if not span.is_recording():
            return NO_TRACE
        return _RecordingTrace(tracer, span)

    def start_background(
        self, name: str, follows: CallTrace, attributes: Mapping[str, AttributeValue]
    ) -> CallTrace:
        """A new trace for work done after an RPC ended, linked to the RPC's span."""
        tracer = self._tracer
        if tracer is None:
            return NO_TRACE
        links = []
        if isinstance(follows, _RecordingTrace):
            links.append(Link(follows._span.get_span_context()))
        span = tracer.start_span(
            name, context=Context(), kind=SpanKind.INTERNAL, attributes=attributes, links=links
        )
        if not span.is_recording():
            return NO_TRACE
        return _RecordingTrace(tracer, span)
