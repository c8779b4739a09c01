"""The outcome dataset format of SPEC.md, checked strictly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router_service.calllog.outcomes import OutcomeFormatError, check_outcome_row, read_outcomes


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "mbpp.dev.1",
        "source": "routerbench-0shot/mbpp",
        "split": "test",
        "task": "mbpp",
        "messages": [{"role": "user", "content": "Write a function."}],
        "outcomes": {
            "strong": {"score": 1.0, "cost_usd": 0.0042, "response": "def f(): ..."},
            "weak": {"score": 0.0, "cost_usd": None, "response": None},
        },
    }
    base.update(changes)
    return base


def test_a_row_in_the_spec_format_passes() -> None:
    check_outcome_row(row())
    check_outcome_row(row(task=None))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"extra": 1}, "unexpected ['extra']"),
        ({"id": ""}, "id must be"),
        ({"task": 3}, "task must be"),
        ({"messages": []}, "messages must be"),
        ({"messages": [{"role": "user"}]}, "messages[0]"),
        ({"outcomes": {}}, "outcomes must be"),
        ({"outcomes": {"m": {"score": 1.5, "cost_usd": None, "response": None}}}, "score"),
        ({"outcomes": {"m": {"score": True, "cost_usd": None, "response": None}}}, "score"),
        ({"outcomes": {"m": {"score": 1, "cost_usd": -1, "response": None}}}, "cost_usd"),
        ({"outcomes": {"m": {"score": 1, "cost_usd": None, "response": 3}}}, "response"),
        ({"outcomes": {"m": {"score": 1, "cost_usd": None}}}, "exactly score"),
    ],
)
def test_rows_off_the_format_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(OutcomeFormatError, match=message.replace("[", r"\[")):
        check_outcome_row(row(**changes))


def test_reading_a_file_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row()) + "\n\n" + json.dumps(row(split="")) + "\n")
    with pytest.raises(OutcomeFormatError, match=r"data\.jsonl:3: split"):
        list(read_outcomes(path))
