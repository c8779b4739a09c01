"""Readers of call logs and outcome files on damaged input: bytes that are not UTF-8, JSON
nested too deeply for the parser, numbers too large for a float.

The call-log reader and `train`'s reader skip such a line and go on (counted, or rejected with
its number); `simulate-traffic`'s strict reader refuses the file naming the line. None of them
lets an exception other than its own escape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router_service.calllog import outcomes as strict_outcomes
from router_service.calllog.codec import MalformedEntry, dumps, loads
from router_service.calllog.entries import LogEntry
from router_service.calllog.reader import LogScan
from router_service.calllog.sinks import STREAM_FIELD
from tests.support.outcome_rows import OUTCOME_ROW
from tests.support.records import call_record, entries, feedback
from training import dataset
from training.errors import DatasetError

DEEP = b"[" * 200_000
NOT_UTF8 = b'{"kind": "feedback", "v": 1, "app": "\xff"}'
ROW = OUTCOME_ROW
ROW_LINE = json.dumps(ROW).encode()
# An integer too large for a float, where a float is expected.
HUGE = "1" + "0" * 400


def _swap(line: str, old: str, new: str) -> str:
    changed = line.replace(old, new, 1)
    assert changed != line
    return changed


def _huge_row(field: str) -> bytes:
    old = '"score": 0.0' if field == "score" else '"cost_usd": 0.5'
    return _swap(json.dumps(ROW), old, old.split(":", maxsplit=1)[0] + ": " + HUGE).encode()


# --- the call-log codec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        DEEP,
        DEEP.decode(),
        NOT_UTF8,
        _swap(dumps(feedback()), '"at":1746100900.0', f'"at":{HUGE}'),
        _swap(dumps(call_record()), '"cost_micro_usd":420', '"cost_micro_usd":Infinity'),
    ],
    ids=["deep bytes", "deep text", "not UTF-8", "huge time", "infinite cost"],
)
def test_the_codec_refuses_what_the_parser_cannot_take(text: str | bytes) -> None:
    with pytest.raises(MalformedEntry):
        loads(text)


def test_values_nested_about_as_deep_as_the_parser_allows_are_refused_or_read() -> None:
    # str() of a metadata value can reach the recursion limit that json.loads just did not.
    line = dumps(call_record())
    for depth in range(900, 1100, 5):
        nested = "[" * depth + "]" * depth
        with contextlib.suppress(MalformedEntry):
            loads(_swap(line, '"team":"finance"', f'"k":{nested}'))


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_the_codec_reads_any_input_or_says_it_is_malformed(text: str | bytes) -> None:
    with contextlib.suppress(MalformedEntry):
        loads(text)


# --- the call-log reader: JSONL days and the Redis Stream -------------------------------------


def _good() -> bytes:
    return dumps(feedback(request_id="r")).encode()


def test_a_line_that_is_not_utf8_is_skipped_and_the_rest_of_the_day_read(tmp_path: Path) -> None:
    (tmp_path / "calllog-2025-05-01.jsonl").write_bytes(
        _good() + b"\n" + NOT_UTF8 + b"\n" + _good() + b"\n"
    )
    (tmp_path / "calllog-2025-05-02.jsonl").write_bytes(_good() + b"\n")
    scan = LogScan()
    assert [e.request_id for e in scan.jsonl(tmp_path)] == ["r", "r", "r"]
    assert scan.malformed == 1


def test_a_line_nested_too_deeply_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "calllog-2025-05-01.jsonl").write_bytes(DEEP + b"\n" + _good() + b"\n")
    scan = LogScan()
    assert [e.request_id for e in scan.jsonl(tmp_path)] == ["r"]
    assert scan.malformed == 1


def test_lines_end_as_in_text_mode(tmp_path: Path) -> None:
    # "\r\n" and a lone "\r" end a line, as they did when the day was read as text.
    (tmp_path / "calllog-2025-05-01.jsonl").write_bytes(
        _good() + b"\r\n" + _good() + b"\r" + _good() + b"\n\r\n \n"
    )
    scan = LogScan()
    assert len(list(scan.jsonl(tmp_path))) == 3
    assert scan.malformed == 0


_no_line_ends = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


def _counts_as_malformed(line: bytes) -> bool:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return bool(text.strip())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.tuples(st.just("entry"), entries)
        | st.tuples(st.just("junk"), _no_line_ends | st.just(DEEP) | st.just(NOT_UTF8)),
        max_size=10,
    ),
    ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_every_entry_is_read_and_every_other_line_counted(
    tmp_path: Path, lines: list[tuple[str, Any]], ending: bytes
) -> None:
    written = [dumps(item).encode() if kind == "entry" else item for kind, item in lines]
    (tmp_path / "calllog-2025-05-01.jsonl").write_bytes(ending.join(written))
    scan = LogScan()
    assert list(scan.jsonl(tmp_path)) == [item for kind, item in lines if kind == "entry"]
    assert scan.malformed == sum(
        _counts_as_malformed(item) for kind, item in lines if kind == "junk"
    )


class _Stream:
    """Just enough of a Redis client for `LogScan.stream`: one page of entries."""

    def __init__(self, values: list[bytes]) -> None:
        self.page = [(f"{i}-0".encode(), {STREAM_FIELD.encode(): v}) for i, v in enumerate(values)]

    async def xrange(self, key: str, **_: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return self.page


def test_stream_entries_nested_too_deeply_or_not_utf8_are_counted() -> None:
    redis = _Stream([DEEP, _good(), NOT_UTF8, _good()])
    scan = LogScan()

    async def read() -> list[LogEntry]:
        return [entry async for entry in scan.stream(cast(Any, redis), "calllog")]

    assert [e.request_id for e in asyncio.run(read())] == ["r", "r"]
    assert scan.malformed == 2


# --- the strict outcome reader (simulate-traffic) ---------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b'{"id": "\xff"}', "not valid UTF-8"),
        (DEEP, "nested too deeply"),
        (b"not json", "Expecting value"),
        (_huge_row("cost_usd"), "cost_usd"),
        (_huge_row("score"), "score"),
    ],
)
def test_the_strict_reader_names_the_line_it_refuses(
    tmp_path: Path, bad: bytes, reason: str
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(ROW_LINE + b"\r\n\n" + bad + b"\n" + ROW_LINE + b"\n")
    rows = strict_outcomes.read_outcomes(path)
    assert next(rows) == ROW
    with pytest.raises(strict_outcomes.OutcomeFormatError, match=rf"data\.jsonl:3: .*{reason}"):
        next(rows)


def _text_mode_outcomes(path: Path) -> list[dict[str, Any]] | str:
    """The strict reader as it was, reading text mode: the rows, or where the error is."""
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                strict_outcomes.check_outcome_row(row)
            except ValueError:
                return f"{path}:{number}"
            rows.append(row)
    return rows


_text_lines = st.lists(
    st.sampled_from([json.dumps(ROW), json.dumps(ROW, ensure_ascii=False), "", " ", "{", "[1]"])
    | st.text(max_size=20),
    max_size=8,
)
_line_ends = st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=8, max_size=8)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=_text_lines, ends=_line_ends)
def test_the_strict_reader_reads_utf8_text_as_text_mode_did(
    tmp_path: Path, lines: list[str], ends: list[str]
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes("".join(line + end for line, end in zip(lines, ends, strict=False)).encode())
    try:
        read: list[dict[str, Any]] | str = list(strict_outcomes.read_outcomes(path))
    except strict_outcomes.OutcomeFormatError as exc:
        # The same line is refused; JSON errors now give their position within the line
        # without its line end.
        read = str(exc).split(": ", maxsplit=1)[0]
    assert read == _text_mode_outcomes(path)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.lists(st.binary(max_size=30) | st.just(ROW_LINE) | st.just(DEEP), max_size=6))
def test_the_strict_reader_reads_any_bytes_or_refuses_them(
    tmp_path: Path, data: list[bytes]
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(data))
    with contextlib.suppress(strict_outcomes.OutcomeFormatError):
        list(strict_outcomes.read_outcomes(path))


# --- train's lenient outcome reader ------------------------------------------------------------


def test_a_line_that_is_not_utf8_is_one_rejected_line(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    data = ROW_LINE + b"\n" + b'{"id": "\xff\xfe"}' + b"\n\n" + DEEP + b"\n" + ROW_LINE + b"\n"
    path.write_bytes(data)
    result = dataset.read_outcomes(path)
    assert [row.id for row in result.rows] == ["q1", "q1"]
    assert [number for number, _ in result.rejected] == [2, 4]
    assert "not valid UTF-8" in result.rejected[0][1]
    assert "not valid JSON" in result.rejected[1][1]
    # The digest is of the bytes read, as before.
    assert result.sha256 == hashlib.sha256(data).hexdigest()


def test_strict_reading_names_the_line_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    path.write_bytes(ROW_LINE + b"\r\n" + b"\xff\n")
    with pytest.raises(DatasetError, match=r"outcomes\.jsonl:2: not valid UTF-8"):
        dataset.read_outcomes(path, strict=True)


@pytest.mark.parametrize("field", ["score", "cost_usd"])
def test_numbers_too_large_for_a_float_are_rejected(field: str) -> None:
    with pytest.raises(DatasetError, match=rf"\]\.{field} is too large"):
        dataset.parse_line(_huge_row(field).decode())


def _read_as_text(
    data: bytes,
) -> tuple[tuple[dataset.OutcomeRow, ...], tuple[tuple[int, str], ...]]:
    """`train`'s reader as it was, decoding the whole file: the rows and the rejected lines."""
    text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    rows, rejected = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(dataset.parse_line(line))
        except DatasetError as exc:
            rejected.append((number, str(exc)))
    return tuple(rows), tuple(rejected)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.sampled_from(
            [
                json.dumps(ROW),
                json.dumps({**ROW, "messages": [{"role": "user", "content": "a\u2028b\x85c\x1c"}]}),
                "",
                "\u3000",
                "{",
            ]
        )
        | st.text(max_size=20),
        max_size=8,
    ),
    ends=_line_ends,
)
def test_utf8_files_are_read_exactly_as_before(
    tmp_path: Path, lines: list[str], ends: list[str]
) -> None:
    path = tmp_path / "outcomes.jsonl"
    data = "".join(line + end for line, end in zip(lines, ends, strict=False)).encode()
    path.write_bytes(data)
    result = dataset.read_outcomes(path)
    assert (result.rows, result.rejected) == _read_as_text(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.lists(st.binary(max_size=30) | st.just(ROW_LINE), max_size=8))
def test_any_bytes_give_rows_and_rejected_lines_never_an_error(
    tmp_path: Path, data: list[bytes]
) -> None:
    path = tmp_path / "outcomes.jsonl"
    path.write_bytes(b"\n".join(data))
    result = dataset.read_outcomes(path)
    nonblank = [
        line
        for line in path.read_bytes().splitlines()
        if line.decode("utf-8", errors="replace").strip()
    ]
    assert len(result.rows) + len(result.rejected) == len(nonblank)
