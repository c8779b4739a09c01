"""Reading outcome JSONL (SPEC.md, "Outcome dataset") into typed rows.

One prompt per line::

    {"id", "source", "split", "task", "messages": [{"role", "content"}],
     "outcomes": {MODEL: {"score": 0..1, "cost_usd": float|null, "response": str|null}}}

Exports of a live call log can hold the odd broken line; by default such lines are rejected
with their line number and reason and the rest is used, so one bad record does not block a
retraining. ``strict=True`` turns the first bad line into a ``DatasetError`` instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from training.errors import DatasetError

__all__ = [
    "Outcome",
    "OutcomeFile",
    "OutcomeRow",
    "parse_line",
    "question_key",
    "read_outcomes",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One model's result on one prompt."""

    score: float
    cost_usd: float | None
    response: str | None


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One prompt with the outcomes of every model that answered it."""

    id: str
    source: str
    split: str | None
    task: str | None
    messages: tuple[tuple[str, str], ...]
    outcomes: Mapping[str, Outcome]


@dataclass(frozen=True, slots=True)
class OutcomeFile:
    """The rows read from one file, the lines that were rejected, as (line number, why), and the
    SHA-256 of the bytes they were read from."""

    path: pathlib.Path
    rows: tuple[OutcomeRow, ...]
    rejected: tuple[tuple[int, str], ...]
    sha256: str


def read_outcomes(path: pathlib.Path, *, strict: bool = False) -> OutcomeFile:
    """Read one outcome JSONL file. Blank lines are ignored."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read outcome file: {exc}") from exc
    rows: list[OutcomeRow] = []
    rejected: list[tuple[int, str]] = []
    # Newlines as text mode reads them: "\n", "\r\n" and a lone "\r" end a line. Split as bytes,
    # which bytes.splitlines does at these only (str.splitlines would also split inside JSON
    # strings holding raw U+2028, U+0085 and similar characters, which JSON allows), and
    # decoded line by line, so that a byte that is not UTF-8 costs its line, not the file.
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = _decode(raw)
            if not line.strip():
                continue
            rows.append(parse_line(line))
        except DatasetError as exc:
            if strict:
                raise DatasetError(f"{path}:{number}: {exc}") from exc
            rejected.append((number, str(exc)))
    return OutcomeFile(
        path=path,
        rows=tuple(rows),
        rejected=tuple(rejected),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not valid UTF-8: {exc}") from exc


def parse_line(line: str) -> OutcomeRow:
    """One JSONL line as a row; DatasetError saying what is wrong otherwise."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DatasetError(f"not valid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise DatasetError("a line must hold a JSON object")
    row_id = _string(record, "id")
    return OutcomeRow(
        id=row_id,
        source=_string(record, "source"),
        split=_optional_string(record, "split"),
        task=_optional_string(record, "task"),
        messages=_messages(record.get("messages")),
        outcomes=_outcomes(record.get("outcomes")),
    )


def question_key(messages: Sequence[tuple[str, str]]) -> str:
    """A normalised key of the prompt, used to keep evaluation prompts out of training data.

    The same question reaches different data sets with other spacing, casing and punctuation;
    the key keeps letters and digits of the whole conversation only.
    """
    joined = " ".join(content for _, content in messages)
    return re.sub(r"[^0-9a-z]+", " ", joined.lower()).strip()


def _string(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise DatasetError(f"field {key!r} must be a non-empty string")
    return value


def _optional_string(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"field {key!r} must be a string or null")
    return value


def _messages(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise DatasetError("field 'messages' must be a non-empty list")
    messages = []
    for message in value:
        if not isinstance(message, dict):
            raise DatasetError("each message must be an object with 'role' and 'content'")
        role = message.get("role")
        if not isinstance(role, str) or "content" not in message:
            raise DatasetError("message 'role' and 'content' must be strings")
        messages.append((role, _content(message["content"])))
    return tuple(messages)


def _content(value: Any) -> str:
    """A message's text. Besides a string, what chat APIs send is read as they mean it: null
    (an assistant turn that only called tools) is no text, and a list of content parts
    (OpenAI's and Anthropic's `[{"type": "text", "text": ...}, {"type": "image_url", ...}]`)
    is its text parts, one per line."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        texts = [part.get("text") for part in value if part.get("type") == "text"]
        if all(isinstance(text, str) for text in texts):
            return "\n".join(texts)
    raise DatasetError("message 'content' must be a string, null or a list of content parts")


def _outcomes(value: Any) -> dict[str, Outcome]:
    if not isinstance(value, dict):
        raise DatasetError("field 'outcomes' must be an object keyed by model")
    outcomes = {}
    for model, outcome in value.items():
        if not isinstance(outcome, dict):
            raise DatasetError(f"outcome of {model!r} must be an object")
        outcomes[model] = Outcome(
            score=_score(model, outcome.get("score")),
            cost_usd=_cost(model, outcome.get("cost_usd")),
            response=_response(model, outcome.get("response")),
        )
    return outcomes


def _float(value: int | float, what: str) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        raise DatasetError(f"{what} is too large a number") from None


def _score(model: str, value: Any) -> float:
    # bool is an int in Python; true/false are not scores.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DatasetError(f"score of {model!r} must be a number in [0, 1]")
    score = _float(value, f"score of {model!r}")
    if not 0.0 <= score <= 1.0:
        raise DatasetError(f"score of {model!r} is {score}, outside [0, 1]")
    return score


def _cost(model: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DatasetError(f"cost_usd of {model!r} must be a number or null")
    cost = _float(value, f"cost_usd of {model!r}")
    if not math.isfinite(cost) or cost < 0.0:
        raise DatasetError(f"cost_usd of {model!r} is {cost}, not a finite amount >= 0")
    return cost


def _response(model: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"response of {model!r} must be a string or null")
    return value


def all_rows(files: Iterable[OutcomeFile]) -> list[OutcomeRow]:
    """The rows of several files, in order."""
    return [row for outcome_file in files for row in outcome_file.rows]
