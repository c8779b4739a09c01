"""The call log's JSON format: every entry survives the round trip; bad input is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_service.calllog.codec import MalformedEntry, decode, dumps, encode, loads
from router_service.calllog.entries import LogEntry
from router_service.records import invalid_call
from tests.support.records import call_record, entries, feedback, grade


@given(entries)
def test_every_entry_round_trips(entry: LogEntry) -> None:
    assert loads(dumps(entry)) == entry


def test_a_cost_record_has_the_fields_spec_md_names() -> None:
    obj = encode(call_record())
    assert obj["kind"] == "call"
    assert obj["time"] == "2025-05-01T12:00:00.250000Z"
    assert obj["decision"]["reasons"][0] == "difficulty 0.31 < 0.70"
    assert obj["decision"]["classifier_version"] == "test-1"
    assert obj["decision"]["arm"] == "policy"
    assert obj["usage"] == {
        "input_tokens": 1200,
        "cached_input_tokens": 1024,
        "cache_write_tokens": 0,
        "output_tokens": 80,
    }
    assert obj["cost_usd"] == 0.00042
    assert obj["prompt_cache_hit"] is True
    assert obj["attempts"][0]["outcome"] == "succeeded"
    assert obj["messages"][1] == {"role": "user", "content": "Summarize the report."}


def test_prompt_text_is_absent_unless_recorded() -> None:
    line = dumps(call_record(prompt=None))
    assert json.loads(line)["messages"] is None
    assert "Summarize the report" not in line


def test_attempts_logged_before_their_upstream_model_was_read_back() -> None:
    obj = encode(call_record())
    assert obj["attempts"][0]["upstream_model"] == "glm-5.2-0501"
    del obj["attempts"][0]["upstream_model"]
    (attempt,) = decode(obj).attempts  # type: ignore[union-attr]
    assert attempt.upstream_model == "" and attempt.request_model == "glm-5.2"


def test_a_request_refused_as_invalid_has_no_decision() -> None:
    record = invalid_call("demo", "bad-1", "3 tools; the limit is 2")
    obj = encode(record)
    assert (obj["decision"], obj["task"], obj["status"]) == (None, "", "invalid")
    assert (obj["cost_micro_usd"], obj["messages"], obj["error"]) == (0, None, record.error)
    assert loads(dumps(record)) == record


def test_feedback_and_grade_lines() -> None:
    assert encode(feedback())["kind"] == "feedback"
    obj = encode(grade())
    assert obj["served"]["model"] == "glm-5.2" and obj["shadow"]["cost_usd"] == 0.0031


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"kind": "call", "v": 2}',
        '{"kind": "nope", "v": 1}',
        '{"kind": "call", "v": 1}',
        '{"kind": "feedback", "v": 1, "request_id": "r", "app": "a", "at": "x", "score": 1,'
        ' "label": "", "comment": ""}',
    ],
)
def test_malformed_lines_are_refused(text: str) -> None:
    with pytest.raises(MalformedEntry):
        loads(text)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_json, st.sampled_from(["call", "feedback", "grade"]))
def test_arbitrary_json_is_decoded_or_refused_never_crashes(value: Any, kind: str) -> None:
    for obj in (value, {"kind": kind, "v": 1, **(value if isinstance(value, dict) else {})}):
        try:
            entry = decode(obj)
        except MalformedEntry:
            continue
        assert loads(dumps(entry)) == entry
