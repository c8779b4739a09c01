"""The outcome dataset format (SPEC.md, "Outcome dataset"), checked strictly.

One JSON object per line:
`{"id", "source", "split", "task", "messages": [{"role", "content"}],
  "outcomes": {MODEL: {"score": 0..1, "cost_usd": float|null, "response": str|null}}}`
(`task` may be null in public data that has no task classes).
`llm-router export` writes it, `llm-router train` and `evaluate` read it, and so does
`llm-router simulate-traffic`; `check_outcome_row` is what every row must pass.

The rows are parsed by the format's one parser, `training.dataset` (standard library only), in
its exact mode: the format only as the service writes it, where `train` also reads what other
sources write (unknown keys, content parts). Here the first bad line stops the reading.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.dataset import OUTCOME_KEYS, decode_line, load_json, parse_record
from training.errors import DatasetError

__all__ = ["OUTCOME_KEYS", "OutcomeFormatError", "check_outcome_row", "read_outcomes"]


class OutcomeFormatError(ValueError):
    pass


def check_outcome_row(row: Any) -> None:
    """Raise `OutcomeFormatError` naming the first thing wrong with `row`."""
    try:
        parse_record(row, exact=True)
    except DatasetError as exc:
        raise OutcomeFormatError(str(exc)) from None


def read_outcomes(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of an outcome JSONL file, each checked; errors name the line."""
    with path.open("rb") as chunks:
        # Lines split as text mode splits them ("\n", "\r\n", a lone "\r"), but decoded one
        # by one, so that a byte that is not UTF-8 is reported with its line like any other fault.
        lines = (line for chunk in chunks for line in chunk.splitlines())
        for number, line in enumerate(lines, 1):
            try:
                row = _parse_line(line)
            except DatasetError as exc:
                raise OutcomeFormatError(f"{path}:{number}: {exc}") from None
            if row is not None:
                yield row


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    """The checked row of one line, None for a blank one."""
    text = decode_line(raw)
    if text is None:
        return None
    row: dict[str, Any] = load_json(text)
    parse_record(row, exact=True)
    return row
