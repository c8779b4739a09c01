"""Spans and metrics built from cost records: the cases a live server rarely shows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.trace import StatusCode

from router_service.cost import Usage
from router_service.fallback import AttemptOutcome, AttemptRecord
from router_service.records import CallStatus
from router_service.telemetry import RouterMetrics, Tracing
from router_service.telemetry import attributes as a
from router_service.telemetry import metrics as m
from tests.support.records import call_record
from tests.support.telemetry import Recorded


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    telemetry = Recorded()
    yield telemetry
    telemetry.shutdown()


def chat_spans(recorded: Recorded) -> list[tuple[str, int, int, dict[str, object]]]:
    spans = sorted(
        (s for s in recorded.spans() if s.name.startswith("chat ")), key=lambda s: s.start_time or 0
    )
    return [(s.name, s.start_time or 0, s.end_time or 0, dict(s.attributes or {})) for s in spans]


def record_one(recorded: Recorded, **changes: object) -> None:
    trace = Tracing(recorded.tracer_provider).start_rpc("router.v1.Router", "Route", ())
    trace.record_call(call_record(**changes))
    trace.end()


def test_attempts_are_laid_end_to_end_from_the_calls_start(recorded: Recorded) -> None:
    attempts = (
        AttemptRecord("glm-5.2", "sim-openai", AttemptOutcome.FAILED, "503", 40.0),
        AttemptRecord("kimi-2.7", "sim-openai", AttemptOutcome.SKIPPED, "circuit open", 0.0),
        AttemptRecord("kimi-2.7", "sim-b", AttemptOutcome.SUCCEEDED, "", 960.0),
    )
    record_one(recorded, attempts=attempts, model="kimi-2.7", latency_ms=1000.0)
    (failed_name, f0, f1, failed), (served_name, s0, s1, served) = chat_spans(recorded)
    start = int(1_746_100_800.25 * 1e9)
    assert (failed_name, served_name) == ("chat glm-5.2", "chat kimi-2.7")
    assert f0 == start and f1 == start + 40_000_000 == s0
    assert s1 == start + 1_000_000_000
    assert failed[a.COST_USD] == 0.0 and failed[a.ERROR_TYPE] == "failed"
    assert served[a.COST_USD] == 0.00042 and served[a.GEN_AI_RESPONSE_MODEL] == "glm-5.2-0501"
    assert served[a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 1024


def test_a_failed_call_is_measured_under_the_model_its_last_request_asked_for(
    recorded: Recorded,
) -> None:
    failed = {"status": CallStatus.FAILED, "model": "", "provider": "", "usage": Usage()}
    attempts = (
        AttemptRecord("glm-5.2", "sim-openai", AttemptOutcome.FAILED, "503", 40.0, "glm-5.2-0414"),
        AttemptRecord("kimi-2.7", "sim-b", AttemptOutcome.SKIPPED, "circuit open", 0.0, "kimi-k2"),
    )
    metrics = RouterMetrics(recorded.meter_provider)
    metrics.observe(call_record(attempts=attempts, cost_micro_usd=0, **failed))
    (duration,) = recorded.points(m.OPERATION_DURATION)
    assert duration.attributes[a.GEN_AI_REQUEST_MODEL] == "glm-5.2-0414"
    assert duration.attributes[a.MODEL] == "glm-5.2"
    # No request sent (every candidate skipped): no model was asked for.
    metrics.observe(call_record(attempts=attempts[1:], cost_micro_usd=0, **failed))
    (unsent,) = [
        p
        for p in recorded.points(m.OPERATION_DURATION)
        if a.GEN_AI_REQUEST_MODEL not in p.attributes
    ]
    assert unsent.attributes[a.MODEL] == "glm-5.2"  # the decided model


def test_a_caller_gone_mid_answer_still_shows_the_serving_attempt(recorded: Recorded) -> None:
    record_one(recorded, attempts=(), status=CallStatus.CANCELLED, finish_reason="cancelled")
    ((name, _, _, attrs),) = chat_spans(recorded)
    assert name == "chat glm-5.2" and attrs[a.ATTEMPT_OUTCOME] == "cancelled"
    assert attrs[a.ERROR_TYPE] == "cancelled"
    assert a.GEN_AI_RESPONSE_FINISH_REASONS not in attrs


SYSTEMS = {"sim-openai": "openai", "sim-b": "anthropic"}


@pytest.mark.parametrize(
    ("status", "ending"),
    [
        # Every candidate failed before its first token.
        (CallStatus.FAILED, AttemptOutcome.FAILED),
        # The second provider refused the request itself as invalid (400).
        (CallStatus.REJECTED, AttemptOutcome.FAILED),
        # The call's deadline passed while the second provider was being asked.
        (CallStatus.DEADLINE_EXCEEDED, AttemptOutcome.CANCELLED),
    ],
)
def test_a_call_no_provider_answered_names_its_last_provider_and_error_alike(
    recorded: Recorded, status: str, ending: AttemptOutcome
) -> None:
    """The GenAI conventions require gen_ai.provider.name on client spans and on the
    operation duration, error.type when the operation ended in an error (the same value on
    spans and metrics for one error), and an ERROR span status."""
    attempts = (
        AttemptRecord("glm-5.2", "sim-openai", AttemptOutcome.FAILED, "HTTP 503", 40.0),
        AttemptRecord("claude-opus-4.8", "sim-b", ending, "ended", 60.0, "claude-opus-4-8"),
    )
    record = call_record(
        attempts=attempts,
        status=status,
        error="the call's error",
        model="",
        provider="",
        usage=Usage(),
        cost_micro_usd=0,
        ttft_ms=None,
        response_model="",
    )
    trace = Tracing(recorded.tracer_provider, SYSTEMS).start_rpc("router.v1.Router", "Route", ())
    trace.record_call(record)
    trace.end()
    RouterMetrics(recorded.meter_provider, SYSTEMS).observe(record)

    moved_on, last = (recorded.span(name) for name in ("chat glm-5.2", "chat claude-opus-4-8"))
    for span in (moved_on, last):
        assert span.status.status_code is StatusCode.ERROR
    moved_on_attrs, last_attrs = dict(moved_on.attributes or {}), dict(last.attributes or {})
    assert moved_on_attrs[a.GEN_AI_PROVIDER_NAME] == "openai"
    assert moved_on_attrs[a.ERROR_TYPE] == "failed"
    assert moved_on.status.description == "HTTP 503"
    assert last_attrs[a.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert last_attrs[a.ERROR_TYPE] == status
    (duration,) = recorded.points(m.OPERATION_DURATION)
    assert duration.attributes[a.GEN_AI_OPERATION_NAME] == "chat"
    assert duration.attributes[a.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert duration.attributes[a.GEN_AI_REQUEST_MODEL] == "claude-opus-4-8"
    assert duration.attributes[a.ERROR_TYPE] == status


def test_a_response_cache_hit_has_no_provider_span_and_no_genai_metrics(
    recorded: Recorded,
) -> None:
    hit = {"served_from_cache": True, "attempts": (), "usage": Usage(), "cost_micro_usd": 0}
    record_one(recorded, **hit)
    assert chat_spans(recorded) == []
    route = recorded.span("router.v1.Router/Route")
    assert (route.attributes or {})[a.SERVED_FROM_CACHE] is True
    assert route.status.status_code is StatusCode.UNSET
    metrics = RouterMetrics(recorded.meter_provider)
    metrics.observe(call_record(**hit))
    (cache,) = recorded.points(m.CACHE_HITS)
    assert cache.attributes[a.CACHE_KIND] == "response" and cache.value == 1
    assert recorded.points(m.TOKEN_USAGE) == [] and recorded.points(m.OPERATION_DURATION) == []
    assert recorded.points(m.ROUTING_DECISIONS)[0].value == 1


def test_step_spans_are_timed_in_place_and_built_when_the_rpc_ends(recorded: Recorded) -> None:
    trace = Tracing(recorded.tracer_provider).start_rpc("router.v1.Router", "Route", ())
    with trace.span(a.SPAN_CLASSIFY, {a.CLASSIFIER_VERSION: "v1"}) as span:
        span.set_attribute(a.DIFFICULTY, 0.7)
    with pytest.raises(RuntimeError), trace.span(a.SPAN_BUDGET_RESERVE):
        raise RuntimeError("over budget")
    assert recorded.spans() == []  # nothing built on the request path
    trace.end()
    # A step after the end (the background settle) is built at once.
    with trace.span(a.SPAN_BUDGET_SETTLE):
        pass
    rpc = recorded.span("router.v1.Router/Route")
    classify = recorded.span(a.SPAN_CLASSIFY)
    reserve = recorded.span(a.SPAN_BUDGET_RESERVE)
    settle = recorded.span(a.SPAN_BUDGET_SETTLE)
    for step in (classify, reserve, settle):
        assert step.parent is not None and step.parent.span_id == rpc.context.span_id
        assert step.context.trace_id == rpc.context.trace_id
    assert rpc.start_time is not None and rpc.end_time is not None
    assert classify.start_time is not None and classify.end_time is not None
    assert reserve.start_time is not None and reserve.end_time is not None
    assert rpc.start_time <= classify.start_time <= classify.end_time <= reserve.start_time
    assert reserve.end_time <= rpc.end_time
    assert dict(classify.attributes or {}) == {a.CLASSIFIER_VERSION: "v1", a.DIFFICULTY: 0.7}
    assert reserve.status.status_code is StatusCode.ERROR
    assert reserve.status.description == "RuntimeError: over budget"
    assert [e.name for e in reserve.events] == ["exception"]
    assert settle.status.status_code is StatusCode.UNSET
