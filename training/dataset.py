"""Reading outcome JSONL (SPEC.md, "Outcome dataset") into typed rows: the one parser of the
format, for `train` and `evaluate` here and for the service's strict reader
(`router_service.calllog.outcomes`).

One prompt per line::

    {"id", "source", "split", "task", "messages": [{"role", "content"}],
     "outcomes": {MODEL: {"score": 0..1, "cost_usd": float|null, "response": str|null}}}

A row is read as other sources write it: unknown keys are ignored, `split` and `task` may be
missing or null, a message's content may be null or a list of chat-API content parts, and an
outcome may leave out `cost_usd` and `response`. ``exact=True`` takes the format only as the
service writes it: exactly these keys, a non-empty `split`, string contents and at least one
outcome. Either way, scores are numbers in [0, 1] and costs finite amounts >= 0 or null.

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
    "OUTCOME_KEYS",
    "Outcome",
    "OutcomeFile",
    "OutcomeRow",
    "decode_line",
    "load_json",
    "no_pair",
    "parse_line",
    "parse_record",
    "question_key",
    "read_outcomes",
]

# A row's keys, and an outcome's, in the format as the service writes it.
OUTCOME_KEYS = frozenset({"id", "source", "split", "task", "messages", "outcomes"})
_OUTCOME_FIELDS = frozenset({"score", "cost_usd", "response"})
_MESSAGE_KEYS = frozenset({"role", "content"})


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
            line = decode_line(raw)
            if line is not None:
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


def decode_line(raw: bytes) -> str | None:
    """One line of a file (without its line end) as text, None when it is blank; DatasetError
    when it is not UTF-8."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not valid UTF-8: {exc}") from exc
    return line if line.strip() else None


def load_json(line: str) -> Any:
    """The JSON value of one line; DatasetError when the line is not JSON."""
    try:
        return json.loads(line)
    except RecursionError:
        raise DatasetError("not valid JSON: nested too deeply") from None
    except ValueError as exc:  # also an integer of more digits than int() takes
        raise DatasetError(f"not valid JSON: {exc}") from exc


def parse_line(line: str) -> OutcomeRow:
    """One JSONL line as a row; DatasetError saying what is wrong otherwise."""
    return parse_record(load_json(line))


def parse_record(record: Any, *, exact: bool = False) -> OutcomeRow:
    """One decoded JSON value as a row; DatasetError naming the first thing wrong otherwise.
    `exact`: the format only as the service writes it (see the module's docstring)."""
    if not isinstance(record, dict):
        raise DatasetError("a row must be a JSON object")
    if exact and record.keys() != OUTCOME_KEYS:
        missing, extra = OUTCOME_KEYS - record.keys(), record.keys() - OUTCOME_KEYS
        raise DatasetError(f"keys: missing {sorted(missing)}, unexpected {sorted(extra)}")
    return OutcomeRow(
        id=_string(record, "id"),
        source=_string(record, "source"),
        split=_string(record, "split") if exact else _optional_string(record, "split"),
        task=_optional_string(record, "task"),
        messages=_messages(record.get("messages"), exact=exact),
        outcomes=_outcomes(record.get("outcomes"), exact=exact),
    )


def question_key(messages: Sequence[tuple[str, str]]) -> str:
    """A normalised key of the prompt, used to keep evaluation prompts out of training data.

    The same question reaches different data sets with other spacing, casing and punctuation;
    the key keeps letters and digits of the whole conversation only.
    """
    joined = " ".join(content for _, content in messages)
    return re.sub(r"[^0-9a-z]+", " ", joined.lower()).strip()


def no_pair(weak: str, strong: str, outcomes: Iterable[Mapping[str, object]]) -> str:
    """Why no row serves the weak/strong pair, naming the models the rows' `outcomes` have: a
    model the data names otherwise (or a typo) is the usual cause."""
    have = ", ".join(sorted({model for row in outcomes for model in row})) or "none"
    return f"no row has outcomes of both {weak!r} and {strong!r}; the data's models: {have}"


def _string(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{key} must be a non-empty string")
    return value


def _optional_string(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"{key} must be a string or null")
    return value


def _messages(value: Any, *, exact: bool) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise DatasetError("messages must be a non-empty list")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or (exact and message.keys() != _MESSAGE_KEYS):
            raise DatasetError(f"messages[{i}] must be an object of 'role' and 'content'")
        role = message.get("role")
        if not isinstance(role, str) or "content" not in message:
            raise DatasetError(f"messages[{i}] must have a string 'role' and a 'content'")
        content = message["content"]
        if exact and not isinstance(content, str):
            raise DatasetError(f"messages[{i}].content must be a string")
        messages.append((role, _content(i, content)))
    return tuple(messages)


def _content(i: int, value: Any) -> str:
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
    raise DatasetError(f"messages[{i}].content must be a string, null or a list of content parts")


def _outcomes(value: Any, *, exact: bool) -> dict[str, Outcome]:
    if not isinstance(value, dict):
        raise DatasetError("outcomes must be an object keyed by model")
    if exact and not value:
        raise DatasetError("outcomes must be a non-empty object keyed by model")
    outcomes = {}
    for model, outcome in value.items():
        where = f"outcomes[{model!r}]"
        if not isinstance(outcome, dict):
            raise DatasetError(f"{where} must be an object")
        if exact and outcome.keys() != _OUTCOME_FIELDS:
            raise DatasetError(f"{where} must have exactly score, cost_usd and response")
        outcomes[model] = Outcome(
            score=_score(where, outcome.get("score")),
            cost_usd=_cost(where, outcome.get("cost_usd")),
            response=_response(where, outcome.get("response")),
        )
    return outcomes


def _float(value: int | float, what: str) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        raise DatasetError(f"{what} is too large a number") from None


def _score(where: str, value: Any) -> float:
    # bool is an int in Python; true/false are not scores.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DatasetError(f"{where}.score must be a number in [0, 1]")
    score = _float(value, f"{where}.score")
    if not 0.0 <= score <= 1.0:
        raise DatasetError(f"{where}.score is {score}, outside [0, 1]")
    return score


def _cost(where: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DatasetError(f"{where}.cost_usd must be a number or null")
    cost = _float(value, f"{where}.cost_usd")
    if not math.isfinite(cost) or cost < 0.0:
        raise DatasetError(f"{where}.cost_usd is {cost}, not a finite amount >= 0")
    return cost


def _response(where: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"{where}.response must be a string or null")
    return value


def all_rows(files: Iterable[OutcomeFile]) -> list[OutcomeRow]:
    """The rows of several files, in order."""
    return [row for outcome_file in files for row in outcome_file.rows]
