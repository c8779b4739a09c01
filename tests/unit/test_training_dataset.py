"""The outcome JSONL reader: valid rows parse, anything else is rejected with a reason."""

from __future__ import annotations

import contextlib
import json
import pathlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.dataset import parse_line, question_key, read_outcomes
from training.errors import DatasetError

VALID: dict[str, Any] = {
    "id": "mbpp.dev.1",
    "source": "routerbench-0shot/mbpp",
    "split": "test",
    "task": "mbpp",
    "messages": [{"role": "user", "content": "Write a python function."}],
    "outcomes": {
        "gpt-4": {"score": 1.0, "cost_usd": 0.0042, "response": "def f(): ..."},
        "mixtral": {"score": 0, "cost_usd": None, "response": None},
    },
}


def test_a_valid_line_parses() -> None:
    row = parse_line(json.dumps(VALID))
    assert row.id == "mbpp.dev.1"
    assert row.messages == (("user", "Write a python function."),)
    assert row.outcomes["gpt-4"].score == 1.0
    assert row.outcomes["mixtral"].cost_usd is None


def test_content_parts_and_null_content_are_read_as_chat_apis_mean_them() -> None:
    parts = [
        {"type": "text", "text": "Describe this chart."},
        {"type": "image_url", "image_url": {"url": "https://example.com/c.png"}},
        {"type": "text", "text": "Then name its axes."},
    ]
    messages = [
        {"role": "user", "content": parts},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "Thanks."},
    ]
    row = parse_line(json.dumps({**VALID, "messages": messages}))
    assert row.messages == (
        ("user", "Describe this chart.\nThen name its axes."),
        ("assistant", ""),
        ("user", "Thanks."),
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": ""}, "^id must be"),
        ({"messages": []}, "^messages must be"),
        ({"messages": [{"role": "user"}]}, "content"),
        ({"messages": [{"role": "user", "content": 3}]}, "content"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, "content"),
        ({"messages": [{"role": "user", "content": ["text"]}]}, "content"),
        ({"outcomes": []}, "^outcomes must be"),
        ({"outcomes": {"m": {"score": 1.5}}}, "outside"),
        ({"outcomes": {"m": {"score": True}}}, "score"),
        ({"outcomes": {"m": {"score": 1, "cost_usd": -1}}}, "cost_usd"),
        ({"outcomes": {"m": {"score": 1, "response": 3}}}, "response"),
        ({"task": 7}, "^task must be"),
    ],
)
def test_malformed_fields_are_rejected_with_a_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(DatasetError, match=reason):
        parse_line(json.dumps({**VALID, **change}))


def test_lenient_reading_keeps_good_lines_and_numbers_bad_ones(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    path.write_text(f"{json.dumps(VALID)}\n\nnot json\n[1]\n{json.dumps(VALID)}\n")
    result = read_outcomes(path)
    assert len(result.rows) == 2
    assert [number for number, _ in result.rejected] == [3, 4]


def test_unicode_line_separators_inside_strings_do_not_split_lines(tmp_path: pathlib.Path) -> None:
    record = {**VALID, "messages": [{"role": "user", "content": "a\u2028b\x85c"}]}
    path = tmp_path / "outcomes.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    result = read_outcomes(path)
    assert result.rejected == ()
    assert result.rows[0].messages == (("user", "a\u2028b\x85c"),)


def test_strict_reading_stops_at_the_first_bad_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    path.write_text(f"{json.dumps(VALID)}\n{{oops\n")
    with pytest.raises(DatasetError, match=r"outcomes.jsonl:2"):
        read_outcomes(path, strict=True)


def test_a_missing_file_is_a_dataset_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        read_outcomes(tmp_path / "absent.jsonl")


def test_question_key_ignores_spacing_case_and_punctuation() -> None:
    assert question_key([("user", "What is  2+2?")]) == question_key([("user", "what is 2 2")])


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_any_json_value_parses_or_is_a_dataset_error(value: Any) -> None:
    try:
        row = parse_line(json.dumps(value))
    except DatasetError:
        return
    assert all(0.0 <= outcome.score <= 1.0 for outcome in row.outcomes.values())


@settings(max_examples=80, deadline=None)
@given(
    record=st.fixed_dictionaries(
        {key: st.one_of(st.just(value), json_values) for key, value in VALID.items()}
    )
)
def test_records_with_fields_swapped_for_junk_never_crash(record: dict[str, Any]) -> None:
    with contextlib.suppress(DatasetError):
        parse_line(json.dumps(record))


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.text(max_size=40) | st.just(json.dumps(VALID)), max_size=12))
def test_every_nonblank_line_is_either_a_row_or_rejected(
    tmp_path: pathlib.Path, lines: list[str]
) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    # A line that is not UTF-8 (lone surrogates) is one rejected line, never the whole file.
    result = read_outcomes(path)
    physical = path.read_bytes().splitlines()
    nonblank = [line for line in physical if line.decode("utf-8", errors="replace").strip()]
    assert len(result.rows) + len(result.rejected) == len(nonblank)
