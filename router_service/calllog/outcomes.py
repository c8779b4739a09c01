"""The outcome dataset format (SPEC.md, "Outcome dataset"), checked strictly.

One JSON object per line:
`{"id", "source", "split", "task", "messages": [{"role", "content"}],
  "outcomes": {MODEL: {"score": 0..1, "cost_usd": float|null, "response": str|null}}}`
(`task` may be null in public data that has no task classes).
`llm-router export` writes it, `llm-router train` and `evaluate` read it, and so does
`llm-router simulate-traffic`; `check_outcome_row` is what every row must pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["OUTCOME_KEYS", "OutcomeFormatError", "check_outcome_row", "read_outcomes"]

OUTCOME_KEYS = frozenset({"id", "source", "split", "task", "messages", "outcomes"})
_OUTCOME_FIELDS = frozenset({"score", "cost_usd", "response"})


class OutcomeFormatError(ValueError):
    pass


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float is no usable score or cost
        return False


def check_outcome_row(row: Any) -> None:
    """Raise `OutcomeFormatError` naming the first thing wrong with `row`."""
    if not isinstance(row, dict):
        raise OutcomeFormatError("a row must be a JSON object")
    if set(row) != OUTCOME_KEYS:
        missing, extra = OUTCOME_KEYS - set(row), set(row) - OUTCOME_KEYS
        raise OutcomeFormatError(f"keys: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for key in ("id", "source", "split"):
        if not isinstance(row[key], str) or not row[key]:
            raise OutcomeFormatError(f"{key} must be a non-empty string")
    # Public data without task classes has null here.
    if row["task"] is not None and not isinstance(row["task"], str):
        raise OutcomeFormatError("task must be a string or null")
    _check_messages(row["messages"])
    _check_outcomes(row["outcomes"])


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise OutcomeFormatError("messages must be a non-empty list")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or set(message) != {"role", "content"}
            or not all(isinstance(message[k], str) for k in ("role", "content"))
        ):
            raise OutcomeFormatError(f"messages[{i}] must be {{'role': str, 'content': str}}")


def _check_outcomes(outcomes: Any) -> None:
    if not isinstance(outcomes, dict) or not outcomes:
        raise OutcomeFormatError("outcomes must be a non-empty object")
    for model, outcome in outcomes.items():
        if not isinstance(outcome, dict) or set(outcome) != _OUTCOME_FIELDS:
            raise OutcomeFormatError(
                f"outcomes[{model!r}] must have exactly score, cost_usd and response"
            )
        score, cost, response = outcome["score"], outcome["cost_usd"], outcome["response"]
        if not _number(score) or not 0 <= score <= 1:
            raise OutcomeFormatError(f"outcomes[{model!r}].score must be a number in [0, 1]")
        if cost is not None and (not _number(cost) or cost < 0):
            raise OutcomeFormatError(f"outcomes[{model!r}].cost_usd must be >= 0 or null")
        if response is not None and not isinstance(response, str):
            raise OutcomeFormatError(f"outcomes[{model!r}].response must be a string or null")


def read_outcomes(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of an outcome JSONL file, each checked; errors name the line."""
    with path.open("rb") as chunks:
        # Lines split as text mode splits them ("\n", "\r\n", a lone "\r"), but decoded one
        # by one, so that a byte that is not UTF-8 is reported with its line like any other fault.
        lines = (line for chunk in chunks for line in chunk.splitlines())
        for number, line in enumerate(lines, 1):
            try:
                row = _parse_line(line)
            except OutcomeFormatError as exc:
                raise OutcomeFormatError(f"{path}:{number}: {exc}") from None
            if row is not None:
                yield row


def _parse_line(line: bytes) -> dict[str, Any] | None:
    """The checked row of one line, None for a blank one."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OutcomeFormatError(f"not valid UTF-8: {exc}") from None
    if not text.strip():
        return None
    try:
        row: dict[str, Any] = json.loads(text)
    except ValueError as exc:
        raise OutcomeFormatError(str(exc)) from None
    except RecursionError:
        raise OutcomeFormatError("JSON nested too deeply") from None
    check_outcome_row(row)
    return row
