"""Spans: one server span per RPC, child spans for its steps, a GenAI client span per provider
attempt.

The composition root hands in the SDK's `TracerProvider` (set up once at the edge by
`telemetry.sdk`) or nothing, and with nothing every trace is `NO_TRACE`, whose methods do
nothing: telemetry off costs a few attribute lookups per call.

Spans are built here as the SDK's finished-span records (`ReadableSpan`) and handed to the
provider's span processors when they end, with the provider's sampler, id generator and
resource: what an exporter receives is what the SDK's `Tracer` would have given it. The
SDK's live spans are not used because of what they cost on a 2-core machine: about 30 µs to
start one (ids, sampling, attribute containers with locks, the processors' `on_start`) and
more to set attributes and end it: 144 µs for one routed call's five spans, against 42 µs
built here, its trace context read and sampled included. A call's attributes are plain dicts
until its span ends. Two SDK features are left out: span limits (the router's spans carry a fixed,
small set of attributes) and spans that are recorded but not sampled (a trace the sampler
does not sample is `NO_TRACE`; the SDK's batch and simple processors export only sampled
spans anyway).

Parents are passed explicitly, never taken from the ambient context. `Route` is an async
generator that grpc.aio drives across many `yield`s, and a context attached before a `yield`
may be detached from another context (a cancelled or garbage-collected generator), which
corrupts the ambient context. So a `CallTrace` carries its own span context.

Provider spans are built when the call ends, from its `CallRecord`: the record holds every
attempt with its outcome and duration, the usage and the cost, which is everything the GenAI
conventions ask for; attempts run one after another, so their start times follow from the
call's start and the durations before them. Step spans (classify, budget reserve) are timed
where they happen and built when the RPC's span ends, so the request path only reads clocks.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision as Sampling
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationInfo, InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from router_service.cost import micro_to_usd
from router_service.fallback import AttemptOutcome, AttemptRecord
from router_service.policy import Decision
from router_service.records import CallRecord, CallStatus
from router_service.telemetry import attributes as a

__all__ = ["NO_TRACE", "CallTrace", "StepSpan", "Tracing"]

Metadata = Iterable[tuple[str, str | bytes]]

_SCOPE = "router_service"
_log = logging.getLogger(__name__)
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


@dataclass(frozen=True, slots=True)
class _Spans:
    """What spans are made with: the SDK tracer's sampler, ids, resource and processors."""

    sampler: Sampler
    ids: IdGenerator
    resource: Resource
    processor: SpanProcessor
    scope: InstrumentationScope
    info: InstrumentationInfo
    # Configured provider name -> gen_ai.provider.name.
    systems: Mapping[str, str]
    # Configured provider name -> the host and port its requests go to (server.address/.port).
    servers: Mapping[str, tuple[str, int]]

    def start(
        self,
        name: str,
        kind: SpanKind,
        parent: Context,
        attributes: dict[str, AttributeValue],
        links: Sequence[Link] = (),
    ) -> SpanContext | None:
        """A new span's context as the SDK's `Tracer.start_span` makes it, with the sampler's
        attributes merged into `attributes`; None when the sampler does not sample it."""
        parent_span = trace.get_current_span(parent).get_span_context()
        valid = parent_span.is_valid
        trace_id = parent_span.trace_id if valid else self.ids.generate_trace_id()
        sampled = self.sampler.should_sample(parent, trace_id, name, kind, attributes, links)
        if sampled.decision is not Sampling.RECORD_AND_SAMPLE:
            return None
        if sampled.attributes:
            attributes.update(sampled.attributes)
        flags = TraceFlags.SAMPLED
        random = parent_span.trace_flags.random_trace_id if valid else self.ids.is_trace_id_random()
        if random:
            flags |= TraceFlags.RANDOM_TRACE_ID
        return SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=sampled.trace_state,
        )

    def child(self, parent: SpanContext) -> SpanContext:
        """The context of a span under `parent`, in its trace, sampled as it is (the default
        parent-based sampler's decision for a sampled local parent, taken without asking)."""
        return SpanContext(
            parent.trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )

    def emit(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        *,
        kind: SpanKind,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, AttributeValue],
        status: Status | None = None,
        events: Sequence[Event] = (),
        links: Sequence[Link] = (),
    ) -> None:
        self.processor.on_end(
            ReadableSpan(
                name,
                context,
                parent,
                self.resource,
                attributes,
                events,
                links,
                kind,
                self.info,
                status or _UNSET,
                start_ns,
                end_ns,
                self.scope,
            )
        )


_UNSET = Status(StatusCode.UNSET)


def _exception_event(error: BaseException, at_ns: int) -> Event:
    """The event the SDK's `Span.record_exception` adds for `error`."""
    kind = type(error)
    module = kind.__module__
    name = f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__
    return Event(
        "exception",
        {
            "exception.type": name,
            "exception.message": str(error),
            "exception.stacktrace": "".join(traceback.format_exception(error)),
            "exception.escaped": "False",
        },
        at_ns,
    )


class _RecordingTrace(CallTrace):
    __slots__ = (
        "_attributes",
        "_context",
        "_decided",
        "_end_ns",
        "_kind",
        "_links",
        "_name",
        "_parent",
        "_spans",
        "_start_ns",
        "_status",
        "_steps",
    )

    def __init__(
        self,
        spans: _Spans,
        name: str,
        context: SpanContext,
        *,
        kind: SpanKind,
        parent: SpanContext | None,
        attributes: dict[str, AttributeValue],
        links: Sequence[Link] = (),
    ) -> None:
        self._spans = spans
        self._name = name
        self._kind = kind
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._links = links
        self._start_ns = time.time_ns()
        self._end_ns = 0  # 0 until the span ends
        self._status: Status | None = None
        self._decided = False
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
            if self._end_ns:
                self._build(step)
            else:
                self._steps.append(step)

    def _build(self, step: _Step) -> None:
        status, events = None, list[Event]()
        if step.error is not None:
            # As the SDK's `start_as_current_span` records an exception leaving its block.
            events.append(_exception_event(step.error, step.end_ns))
            status = Status(StatusCode.ERROR, f"{type(step.error).__name__}: {step.error}")
        self._spans.emit(
            step.name,
            self._spans.child(self._context),
            self._context,
            kind=SpanKind.INTERNAL,
            start_ns=step.start_ns,
            end_ns=step.end_ns,
            attributes=step.attributes,
            status=status,
            events=events,
        )

    # Once the span has ended its attributes belong to the span processors (a batch processor
    # exports them later, from its own thread): like the SDK's ended spans, the span itself
    # takes no more changes.

    def set(self, key: str, value: AttributeValue) -> None:
        if not self._end_ns:
            self._attributes[key] = value

    def set_decision(self, decision: Decision, request_id: str) -> None:
        if not self._end_ns:
            self._attributes.update(_decision_attributes(decision, request_id))
            self._decided = True

    def record_call(self, record: CallRecord) -> None:
        if not self._end_ns:
            self._record_outcome(record)
        self._attempt_spans(record)

    def _record_outcome(self, record: CallRecord) -> None:
        if not self._decided and record.decision is not None:
            self.set_decision(record.decision, record.request_id)
        attributes = self._attributes
        attributes[a.APP] = record.app
        attributes[a.COST_USD] = micro_to_usd(record.cost_micro_usd)
        attributes[a.SERVED_FROM_CACHE] = record.served_from_cache
        attributes[a.PROMPT_CACHE_HIT] = record.prompt_cache_hit
        attributes[a.STATUS] = record.status
        if record.model:
            attributes[a.MODEL] = record.model
        if record.ttft_ms is not None:
            attributes[a.TTFT_MS] = record.ttft_ms
        if record.overhead_ms is not None:
            attributes[a.OVERHEAD_MS] = record.overhead_ms

    def _attempt_spans(self, record: CallRecord) -> None:
        start_ns = int(record.started_at * _NS_PER_S)
        end_ns = start_ns + int(record.latency_ms * _NS_PER_MS)
        at = start_ns
        attempts = record.attempts
        # The last attempt served the answer when a model did (`record.model`); one cancelled
        # before its first token (the caller gone, the deadline passed) served nothing, and
        # has its span as the failed ones do.
        serving_recorded = (
            bool(attempts)
            and bool(record.model)
            and attempts[-1].outcome
            in (AttemptOutcome.SUCCEEDED, AttemptOutcome.BROKEN, AttemptOutcome.CANCELLED)
        )
        failed = attempts[:-1] if serving_recorded else attempts
        last = record.last_request
        for attempt in failed:
            if attempt.outcome is AttemptOutcome.SKIPPED:
                continue
            finish = at + int(attempt.latency_ms * _NS_PER_MS)
            system = self._spans.systems.get(attempt.provider, attempt.provider)
            request_model = attempt.request_model
            attributes = _attempt_attributes(record, attempt.model, request_model, system)
            self._add_server(attributes, attempt.provider)
            attributes[a.COST_USD] = 0.0
            error = _attempt_error(record, attempt, ending=attempt is last)
            self._attempt_span(request_model, attempt, at, finish, attributes, error=error)
            at = finish
        if record.model and not record.served_from_cache:
            # The serving attempt ran from the end of the failed ones to the end of the call
            # (a call that ends before any attempt was made has no attempt record).
            serving = attempts[-1] if serving_recorded else None
            request_model = record.model if serving is None else serving.request_model
            system = self._spans.systems.get(record.provider, record.provider)
            attributes = _serving_attributes(record, serving, request_model, system)
            self._add_server(attributes, record.provider)
            self._attempt_span(
                request_model,
                serving,
                at,
                max(at, end_ns),
                attributes,
                error=_attempt_error(record, serving, ending=True),
            )

    def _add_server(self, attributes: dict[str, AttributeValue], provider: str) -> None:
        """The GenAI conventions' `server.address` and `server.port` of a client span: where the
        provider's requests went."""
        server = self._spans.servers.get(provider)
        if server is not None:
            attributes[a.SERVER_ADDRESS], attributes[a.SERVER_PORT] = server

    def _attempt_span(
        self,
        request_model: str,
        attempt: AttemptRecord | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, AttributeValue],
        *,
        error: tuple[str, str] | None,
    ) -> None:
        """A GenAI client span for one attempt, named for the model it asked the provider for,
        as the GenAI conventions name it: `chat {gen_ai.request.model}`; `error`: the attempt's
        `error.type` and status description when it ended in an error."""
        status = None
        if attempt is not None:
            attributes[a.ATTEMPT_OUTCOME] = attempt.outcome.value
        if error is not None:
            error_type, description = error
            attributes[a.ERROR_TYPE] = error_type
            status = Status(StatusCode.ERROR, description or None)
        self._spans.emit(
            f"{a.OPERATION_CHAT} {request_model}",
            self._spans.child(self._context),
            self._context,
            kind=SpanKind.CLIENT,
            start_ns=start_ns,
            end_ns=end_ns,
            attributes=attributes,
            status=status,
        )

    def fail(self, error: BaseException, grpc_code: int) -> None:
        if self._end_ns:
            return
        self._attributes[a.RPC_GRPC_STATUS_CODE] = grpc_code
        self._attributes[a.ERROR_TYPE] = type(error).__name__
        self._status = Status(StatusCode.ERROR, str(error))

    def child_call(self, name: str) -> CallTrace:
        return _RecordingTrace(
            self._spans,
            name,
            self._spans.child(self._context),
            kind=SpanKind.INTERNAL,
            parent=self._context,
            attributes={},
        )

    def end(self) -> None:
        if self._end_ns:
            return
        self._end_ns = time.time_ns()
        for step in self._steps:
            self._build(step)
        self._steps.clear()
        self._spans.emit(
            self._name,
            self._context,
            self._parent,
            kind=self._kind,
            start_ns=self._start_ns,
            end_ns=self._end_ns,
            attributes=self._attributes,
            status=self._status,
            links=self._links,
        )

    @property
    def context(self) -> SpanContext:
        """This trace's span context (what a span linking to it refers to)."""
        return self._context


def _attempt_error(
    record: CallRecord, attempt: AttemptRecord | None, *, ending: bool
) -> tuple[str, str] | None:
    """The `error.type` and status description of an attempt's client span, None when it did
    not end in an error. The attempt that ended the call (`ending`: its last request, or the
    serving one) takes the call's status, the `error.type` its `gen_ai.client.operation.duration`
    carries, so a span and the metric name one error alike (`rejected`, `deadline_exceeded`,
    `cancelled`); an attempt the call moved on from is `failed`."""
    if attempt is not None and attempt.outcome is AttemptOutcome.SUCCEEDED:
        return None
    description = attempt.error if attempt is not None else ""
    if ending and not description:
        description = record.error
    if ending and record.status != CallStatus.OK:
        return record.status, description
    if attempt is not None and attempt.outcome is not AttemptOutcome.SKIPPED:
        return attempt.outcome.value, description
    return None


def _attempt_attributes(
    record: CallRecord, model: str, request_model: str, system: str
) -> dict[str, AttributeValue]:
    """`model` is the catalog's name (ours, `llm_router.model`), `request_model` the name the
    provider was asked for (`gen_ai.request.model`): a deployment's `upstream_model` may differ."""
    attributes: dict[str, AttributeValue] = {
        a.GEN_AI_OPERATION_NAME: a.OPERATION_CHAT,
        a.GEN_AI_PROVIDER_NAME: system,
        a.GEN_AI_REQUEST_MODEL: request_model,
        a.MODEL: model,
        a.APP: record.app,
    }
    decision = record.decision
    if decision is not None:  # a call with attempts always has one
        attributes[a.GEN_AI_REQUEST_MAX_TOKENS] = decision.max_output_tokens
        attributes[a.TIER] = decision.tier.value
    return attributes


def _serving_attributes(
    record: CallRecord, attempt: AttemptRecord | None, request_model: str, system: str
) -> dict[str, AttributeValue]:
    usage = record.usage
    attributes = _attempt_attributes(record, record.model, request_model, system)
    # The provider's own name for the model, else the one it was asked for.
    attributes[a.GEN_AI_RESPONSE_MODEL] = record.response_model or request_model
    attributes[a.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
    attributes[a.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
    attributes[a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_input_tokens
    attributes[a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_tokens
    attributes[a.COST_USD] = micro_to_usd(record.cost_micro_usd)
    attributes[a.PROMPT_CACHE_HIT] = record.prompt_cache_hit
    if record.status == CallStatus.OK:
        attributes[a.GEN_AI_RESPONSE_FINISH_REASONS] = (record.finish_reason,)
    elif attempt is None:
        attributes[a.ATTEMPT_OUTCOME] = record.status
    return attributes


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

    def __init__(
        self,
        provider: TracerProvider | None = None,
        systems: Mapping[str, str] | None = None,
        servers: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        """`systems`: each configured provider's `gen_ai.provider.name` (default: its name);
        `servers`: the host and port each provider's requests go to (none: not recorded)."""
        self._spans: _Spans | None = None
        if provider is None:
            return
        tracer = provider.get_tracer(_SCOPE)
        if not isinstance(tracer, SdkTracer):
            # OTEL_SDK_DISABLED gives a no-op tracer; anything else is a mistake worth a line.
            if not _sdk_disabled():
                _log.warning("tracing is off: %r is not the SDK's tracer", tracer)
            return
        info = tracer.instrumentation_info
        self._spans = _Spans(
            sampler=tracer.sampler,
            ids=tracer.id_generator,
            resource=tracer.resource,
            processor=tracer.span_processor,
            # The tracer's scope, as its (public, deprecated) instrumentation info says it.
            scope=InstrumentationScope(info.name, info.version, info.schema_url),
            info=info,
            systems=dict(systems or {}),
            servers=dict(servers or {}),
        )

    @property
    def enabled(self) -> bool:
        return self._spans is not None

    def start_rpc(self, service: str, method: str, metadata: Metadata | None) -> CallTrace:
        """The server span of one RPC, continuing the caller's trace from its metadata."""
        spans = self._spans
        if spans is None:
            return NO_TRACE
        parent = propagate.extract(tuple(metadata or ()), getter=_GETTER)
        name = f"{service}/{method}"
        attributes: dict[str, AttributeValue] = {
            a.RPC_SYSTEM: "grpc",
            a.RPC_SERVICE: service,
            a.RPC_METHOD: method,
        }
        context = spans.start(name, SpanKind.SERVER, parent, attributes)
        if context is None:
            return NO_TRACE
        remote = trace.get_current_span(parent).get_span_context()
        return _RecordingTrace(
            spans,
            name,
            context,
            kind=SpanKind.SERVER,
            parent=remote if remote.is_valid else None,
            attributes=attributes,
        )

    def start_background(
        self, name: str, follows: CallTrace, attributes: Mapping[str, AttributeValue]
    ) -> CallTrace:
        """A new trace for work done after an RPC ended, linked to the RPC's span."""
        spans = self._spans
        if spans is None:
            return NO_TRACE
        links = [Link(follows.context)] if isinstance(follows, _RecordingTrace) else []
        own = dict(attributes)
        context = spans.start(name, SpanKind.INTERNAL, Context(), own, links)
        if context is None:
            return NO_TRACE
        return _RecordingTrace(
            spans, name, context, kind=SpanKind.INTERNAL, parent=None, attributes=own, links=links
        )


def _sdk_disabled() -> bool:
    """Whether OTEL_SDK_DISABLED turned the SDK's providers into no-ops, as the SDK reads it."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
