"""Cost records, feedback and grades joined into the outcome dataset."""

from __future__ import annotations

import pytest

from router_service.calllog.export import build_outcomes
from router_service.calllog.outcomes import check_outcome_row
from router_service.records import CallStatus, invalid_call
from tests.support.records import call_record, feedback, grade


def test_feedback_scores_the_served_model_and_a_grade_adds_the_other_tier() -> None:
    rows, summary = build_outcomes(
        [call_record(), feedback(score=0.9), grade()], served_score="feedback"
    )
    assert summary.rows == 1 and summary.both_arms == 1
    (row,) = rows
    check_outcome_row(row)
    assert row["id"] == "demo/req-1"
    assert row["source"] == "llm-router/demo"
    assert row["task"] == "summarization"
    assert row["messages"] == [
        {"role": "system", "content": "You summarize."},
        {"role": "user", "content": "Summarize the report."},
    ]
    assert row["outcomes"] == {
        "glm-5.2": {"score": 0.9, "cost_usd": 0.00042, "response": "cheap answer"},
        "gpt-5.5": {"score": 0.8, "cost_usd": 0.0031, "response": "frontier answer"},
    }


def test_one_grader_for_both_arms_by_default() -> None:
    entries = [call_record(), feedback(score=0.9), grade()]
    entries += [call_record(request_id="r2", started_at=2e9), feedback(request_id="r2")]
    (shadowed, plain), _ = build_outcomes(entries)
    assert shadowed["outcomes"]["glm-5.2"]["score"] == 0.6
    assert shadowed["outcomes"]["gpt-5.5"]["score"] == 0.8
    assert plain["outcomes"]["glm-5.2"]["score"] == 0.9


def test_without_feedback_the_judge_scores_the_served_answer() -> None:
    (row,), _ = build_outcomes([call_record(), grade()])
    assert row["outcomes"]["glm-5.2"]["score"] == 0.6


def test_feedback_alone_gives_one_arm() -> None:
    (row,), summary = build_outcomes([call_record(), feedback()])
    assert list(row["outcomes"]) == ["glm-5.2"] and row["outcomes"]["glm-5.2"]["response"] is None
    assert summary.both_arms == 0


def test_the_latest_feedback_wins() -> None:
    entries = [call_record(), feedback(score=0.2, at=5.0), feedback(score=0.7, at=9.0)]
    entries.append(feedback(score=0.1, at=1.0))
    (row,), summary = build_outcomes(entries)
    assert row["outcomes"]["glm-5.2"]["score"] == 0.7
    assert summary.feedback == 3


def test_feedback_joins_only_the_same_apps_request() -> None:
    rows, summary = build_outcomes([call_record(), feedback(app="other")])
    assert rows == [] and summary.no_outcome == 1 and summary.unmatched == 1


def test_apps_without_opt_in_are_counted_not_exported() -> None:
    entries = [call_record(app="bot", prompt=None), feedback(app="bot"), call_record()]
    rows, summary = build_outcomes([*entries, feedback()])
    assert [r["id"] for r in rows] == ["demo/req-1"]
    assert summary.no_prompt == {"bot": 1}


@pytest.mark.parametrize("status", [CallStatus.FAILED, CallStatus.CANCELLED, CallStatus.BROKEN])
def test_unanswered_calls_are_skipped(status: str) -> None:
    rows, summary = build_outcomes([call_record(status=status), feedback()])
    assert rows == [] and summary.unanswered == 1


def test_requests_refused_as_invalid_are_never_rows() -> None:
    invalid = [invalid_call("demo", request_id, "bad") for request_id in ("", "", "req-1")]
    rows, summary = build_outcomes([*invalid, feedback()])
    assert rows == [] and summary.invalid == 3 and summary.calls == 0
    assert summary.unmatched == 1  # the feedback has no routed call to join


def test_shadow_records_are_spend_only() -> None:
    shadow = call_record(app="demo:shadow", request_id="req-1.shadow", model="gpt-5.5")
    rows, summary = build_outcomes([call_record(), shadow, grade()])
    assert len(rows) == 1 and summary.shadow_calls == 1 and summary.calls == 1


def test_the_split_is_stable_follows_the_share_and_keeps_a_prompt_on_one_side() -> None:
    entries = []
    for i in range(400):
        # Every prompt is asked twice (the second time with other spacing and case).
        question = (
            f"Summarize report number {i // 2}." if i % 2 else f"summarize  REPORT number {i // 2}"
        )
        entries += [
            call_record(request_id=f"r{i}", started_at=float(i), prompt=(("user", question),)),
            feedback(request_id=f"r{i}"),
        ]
    rows, _ = build_outcomes(entries, test_share=0.25)
    again, _ = build_outcomes(entries, test_share=0.25)
    assert [r["split"] for r in rows] == [r["split"] for r in again]
    assert 60 < sum(r["split"] == "test" for r in rows) < 140
    assert [r["id"] for r in rows] == [f"demo/r{i}" for i in range(400)]
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert first["split"] == second["split"]
    assert {r["split"] for r in build_outcomes(entries)[0]} == {"train"}


def test_answers_replayed_from_the_response_cache_are_not_outcomes() -> None:
    rows, summary = build_outcomes(
        [call_record(served_from_cache=True, cost_micro_usd=0), feedback()]
    )
    assert rows == []
    assert summary.from_cache == 1
