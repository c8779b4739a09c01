"""Call-log entries for tests: a valid cost record with targeted changes, and strategies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from router_service.calllog.entries import Feedback, Grade, GradedAnswer
from router_service.config import Tier
from router_service.cost import Usage
from router_service.fallback import AttemptOutcome, AttemptRecord
from router_service.policy import BudgetState, Decision
from router_service.records import CallRecord, CallStatus

DECISION = Decision(
    task="summarization",
    tier=Tier.CHEAP,
    model="glm-5.2",
    candidates=("glm-5.2", "kimi-2.7"),
    difficulty=0.31,
    threshold=0.7,
    classifier_version="test-1",
    reasons=("difficulty 0.31 < 0.70", "glm-5.2: cheapest healthy cheap model for this request"),
    max_output_tokens=256,
)


def call_record(**changes: Any) -> CallRecord:
    record = CallRecord(
        request_id="req-1",
        started_at=1_746_100_800.25,
        app="demo",
        decision=DECISION,
        usage=Usage(input_tokens=1200, cached_input_tokens=1024, output_tokens=80),
        cost_micro_usd=420,
        ttft_ms=210.5,
        latency_ms=1100.0,
        served_from_cache=False,
        attempts=(
            AttemptRecord(
                "glm-5.2", "sim-openai", AttemptOutcome.SUCCEEDED, "", 1100.0, "glm-5.2-0501"
            ),
        ),
        status=CallStatus.OK,
        error="",
        model="glm-5.2",
        provider="sim-openai",
        finish_reason="stop",
        prompt=(("system", "You summarize."), ("user", "Summarize the report.")),
        metadata={"team": "finance"},
        response_model="glm-5.2-0501",
        overhead_ms=0.8,
    )
    return replace(record, **changes)


def feedback(**changes: Any) -> Feedback:
    return replace(
        Feedback(request_id="req-1", app="demo", at=1_746_100_900.0, score=0.9), **changes
    )


def grade(**changes: Any) -> Grade:
    return replace(
        Grade(
            request_id="req-1",
            app="demo",
            task="summarization",
            at=1_746_100_901.0,
            judge="gpt-5.5",
            served=GradedAnswer("glm-5.2", 0.6, 420, "cheap answer"),
            shadow=GradedAnswer("gpt-5.5", 0.8, 3100, "frontier answer"),
        ),
        **changes,
    )


_text = st.text(max_size=30)
_floats = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
_times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
_counts = st.integers(min_value=0, max_value=10**9)

decisions = st.builds(
    Decision,
    task=_text,
    tier=st.sampled_from(Tier),
    model=_text,
    candidates=st.lists(_text, max_size=4).map(tuple),
    difficulty=st.none() | st.floats(0, 1),
    threshold=st.none() | st.floats(0, 1),
    classifier_version=_text,
    reasons=st.lists(_text, max_size=4).map(tuple),
    max_output_tokens=_counts,
    arm=st.sampled_from(["policy", "explore", "forced"]),
    propensity=st.floats(0, 1),
    budget=st.sampled_from(BudgetState),
)

call_records = st.builds(
    CallRecord,
    request_id=_text,
    started_at=_times,
    app=_text,
    decision=st.none() | decisions,
    usage=st.builds(Usage, _counts, _counts, _counts, _counts),
    cost_micro_usd=_counts,
    ttft_ms=st.none() | _floats,
    latency_ms=_floats,
    served_from_cache=st.booleans(),
    attempts=st.lists(
        st.builds(
            AttemptRecord, _text, _text, st.sampled_from(AttemptOutcome), _text, _floats, _text
        ),
        max_size=3,
    ).map(tuple),
    status=st.sampled_from([v for k, v in vars(CallStatus).items() if k.isupper()]),
    error=_text,
    model=_text,
    provider=_text,
    finish_reason=_text,
    prompt=st.none() | st.lists(st.tuples(_text, st.text(max_size=200)), max_size=3).map(tuple),
    metadata=st.dictionaries(_text, _text, max_size=3),
    response_model=_text,
    overhead_ms=st.none() | _floats,
)
feedbacks = st.builds(Feedback, _text, _text, _times, st.floats(0, 1), _text, _text)
_answers = st.builds(GradedAnswer, _text, st.floats(0, 1), _counts, st.none() | _text)
grades = st.builds(Grade, _text, _text, _text, _times, _text, _answers, _answers)
entries = call_records | feedbacks | grades
