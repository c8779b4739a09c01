"""The two readers of the outcome format agree on which rows are valid.

`simulate-traffic`'s strict reader (`router_service.calllog.outcomes`) takes the format exactly
as the service writes it; `train`'s reader (`training.dataset`) also takes what other sources
write. Rows are drawn here field by field from three kinds of value: in the exact format, one
only `train` reads (its tolerances, listed below), and one neither reads. The strict reader
takes a row exactly when every value is in the exact format, `train` exactly when none is bad,
and both read a row they take to the same values. In files, both number the same lines and stop
at (or reject) the same ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router_service.calllog.outcomes import OutcomeFormatError, check_outcome_row, read_outcomes
from tests.support.outcome_rows import OUTCOME_ROW
from training import dataset
from training.errors import DatasetError


class Kind(IntEnum):
    EXACT = 0  # in the format as the service writes it
    TOLERATED = 1  # read by train only
    BAD = 2  # read by neither


# A value drawn for a field, and its kind; MISSING leaves the key out.
MISSING = object()
Drawn = tuple[Any, Kind]


def exactly(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Drawn]:
    return values.map(lambda value: (value, Kind.EXACT))


def field(
    drawn: st.SearchStrategy[Drawn], tolerated: list[Any], bad: list[Any]
) -> st.SearchStrategy[Drawn]:
    """Mostly what `drawn` draws (a row has about twenty fields: else almost every row would be
    bad), one time in fifteen one of the others."""
    others = st.sampled_from(
        [(value, Kind.TOLERATED) for value in tolerated] + [(value, Kind.BAD) for value in bad]
    )
    return st.sampled_from([True] * 14 + [False]).flatmap(lambda usual: drawn if usual else others)


def obj(fields: dict[str, st.SearchStrategy[Drawn]]) -> st.SearchStrategy[Drawn]:
    """A JSON object of `fields`, sometimes with a key of its own (which only train reads)."""

    def build(drawn: dict[str, Drawn], unknown: bool) -> Drawn:
        value = {key: v for key, (v, _) in drawn.items() if v is not MISSING}
        kinds = [kind for _, kind in drawn.values()]
        if unknown:
            value["x-unknown"] = 1
            kinds.append(Kind.TOLERATED)
        return value, max(kinds, default=Kind.EXACT)

    return st.builds(build, st.fixed_dictionaries(fields), st.booleans())


def listed(
    items: st.SearchStrategy[Drawn], *, max_size: int, keys: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[Drawn]:
    """A non-empty list of `items` (an object keyed by `keys`, if given), of their worst kind."""
    if keys is None:
        drawn = st.lists(items, min_size=1, max_size=max_size)
        return drawn.map(lambda d: ([v for v, _ in d], max(k for _, k in d)))
    pairs = st.dictionaries(keys, items, min_size=1, max_size=max_size)
    return pairs.map(lambda d: ({m: v for m, (v, _) in d.items()}, max(k for _, k in d.values())))


text = st.text(max_size=6)
unit = st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0, 1])
amount = st.none() | st.floats(min_value=0.0, max_value=100.0) | st.integers(0, 10)
TOO_LARGE = 10**400  # an integer no float holds

outcome = field(
    obj(
        {
            "score": field(
                exactly(unit),
                [],
                [-0.1, 1.5, True, math.nan, math.inf, TOO_LARGE, None, "1", MISSING],
            ),
            "cost_usd": field(exactly(amount), [MISSING], [-1, True, math.inf, TOO_LARGE, "0.1"]),
            "response": field(exactly(st.none() | text), [MISSING], [3, ["a"]]),
        },
    ),
    [],
    [None, []],
)
PARTS = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "u"}}]
message = field(
    obj(
        {
            "role": field(
                exactly(st.sampled_from(["user", "assistant", "system"])), [], [3, None, MISSING]
            ),
            "content": field(
                exactly(text),
                [None, PARTS],
                [3, MISSING, [{"type": "text", "text": 3}], ["a"], {"t": "a"}],
            ),
        },
    ),
    [],
    ["hi", None],
)
rows = field(
    obj(
        {
            "id": field(exactly(st.sampled_from(["q1", "mbpp.dev.1"])), [], ["", 3, None, MISSING]),
            "source": field(exactly(st.just("routerbench-0shot/mbpp")), [], ["", None, MISSING]),
            "split": field(exactly(st.sampled_from(["train", "test"])), ["", None, MISSING], [3]),
            "task": field(exactly(st.sampled_from(["mbpp", "", None])), [MISSING], [3, ["mbpp"]]),
            "messages": field(listed(message, max_size=3), [], [[], {}, "hi", MISSING]),
            "outcomes": field(
                listed(outcome, max_size=3, keys=st.sampled_from(["weak", "strong", "gpt-4"])),
                [{}],
                [[], "m", None, MISSING],
            ),
        },
    ),
    [],
    [[], "row", None],
)


def accepts(check: Callable[[], object]) -> bool:
    try:
        check()
    except (OutcomeFormatError, DatasetError):
        return False
    return True


def _as_read(row: dict[str, Any]) -> dataset.OutcomeRow:
    """A row in the exact format, as `train` should read it."""
    return dataset.OutcomeRow(
        id=row["id"],
        source=row["source"],
        split=row["split"],
        task=row["task"],
        messages=tuple((m["role"], m["content"]) for m in row["messages"]),
        outcomes={
            model: dataset.Outcome(float(o["score"]), o["cost_usd"], o["response"])
            for model, o in row["outcomes"].items()
        },
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=rows)
def test_both_readers_take_the_rows_their_rules_say(drawn: Drawn) -> None:
    row, kind = drawn
    line = json.dumps(row)
    strict = accepts(lambda: check_outcome_row(row))
    lenient = accepts(lambda: dataset.parse_line(line))
    assert (strict, lenient) == (kind == Kind.EXACT, kind <= Kind.TOLERATED)
    if strict:
        read = dataset.parse_line(line)
        assert read == _as_read(row)
        assert dataset.parse_record(row, exact=True) == read


def _changed(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    row = json.loads(json.dumps(OUTCOME_ROW))
    *parents, key = path
    parent = row
    for step in parents:
        parent = parent[step]
    if value is MISSING:
        del parent[key]
    else:
        parent[key] = value
    return row


# Each of train's tolerances alone (the drawn rows above combine them).
@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("x-unknown",), 1),
        (("split",), MISSING),
        (("split",), None),
        (("split",), ""),
        (("task",), MISSING),
        (("messages", 0, "content"), None),
        (("messages", 0, "content"), PARTS),
        (("messages", 0, "name"), "n"),
        (("outcomes",), {}),
        (("outcomes", "weak", "cost_usd"), MISSING),
        (("outcomes", "weak", "response"), MISSING),
        (("outcomes", "weak", "x-unknown"), 1),
    ],
)
def test_what_only_train_reads(path: tuple[str | int, ...], value: Any) -> None:
    row = _changed(path, value)
    assert accepts(lambda: dataset.parse_line(json.dumps(row)))
    with pytest.raises(OutcomeFormatError):
        check_outcome_row(row)
    check_outcome_row(OUTCOME_ROW)


# --- whole files: the same lines, numbered alike -----------------------------------------------

_exact_rows = rows.filter(lambda drawn: drawn[1] != Kind.TOLERATED)
_lines = st.lists(
    _exact_rows.map(lambda drawn: json.dumps(drawn[0]).encode())
    | st.sampled_from([b"", b" \t", b"{", b"\xff\xfe", b"[" * 5_000, b"1" * 5_000]),
    max_size=6,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=_lines, ends=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=6))
def test_both_readers_refuse_the_same_lines_of_a_file(
    tmp_path: Path, lines: list[bytes], ends: list[bytes]
) -> None:
    path = tmp_path / "outcomes.jsonl"
    path.write_bytes(b"".join(line + end for line, end in zip(lines, ends, strict=False)))
    lenient = dataset.read_outcomes(path)
    try:
        strict = list(read_outcomes(path))
    except OutcomeFormatError as exc:
        # The strict reader stops at the first line train rejects, and names it.
        first_rejected = lenient.rejected[0][0]
        assert str(exc).startswith(f"{path}:{first_rejected}: ")
        return
    assert not lenient.rejected
    assert tuple(map(_as_read, strict)) == lenient.rows


@pytest.mark.parametrize("line", [b"1" * 5_000, b'{"id": ' + b"1" * 5_000 + b"}"])
def test_an_integer_too_long_to_read_is_a_bad_line_for_both(tmp_path: Path, line: bytes) -> None:
    # json.loads refuses more than 4,300 digits with a bare ValueError: one bad line, not a
    # crash of train (its reader let that escape before it shared the strict reader's parser).
    path = tmp_path / "outcomes.jsonl"
    path.write_bytes(line + b"\n")
    assert [number for number, _ in dataset.read_outcomes(path).rejected] == [1]
    with pytest.raises(OutcomeFormatError, match=r"outcomes\.jsonl:1: not valid JSON"):
        list(read_outcomes(path))
