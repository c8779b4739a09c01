"""The command line on damaged input and odd arguments: a clean `llm-router: ...` message and a
non-zero exit, never a traceback or a stray file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from router_service.calllog.codec import dumps
from router_service.cli import main
from tests.support.outcome_rows import OUTCOME_ROW
from tests.support.records import call_record, feedback

DEEP = b"[" * 200_000


def _damaged_log(directory: Path) -> Path:
    """A day of call log with a line that is not UTF-8 and one nested too deeply between good
    entries."""
    directory.mkdir()
    good = [dumps(call_record(prompt=None)).encode(), dumps(feedback()).encode()]
    (directory / "calllog-2025-05-01.jsonl").write_bytes(
        b"\n".join([good[0], b'{"kind": "\xff"}', DEEP, good[1]]) + b"\n"
    )
    return directory


def test_export_skips_and_counts_unreadable_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, out = _damaged_log(tmp_path / "log"), tmp_path / "out.jsonl"
    assert main(["export", "--calllog", str(log), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "from 1 calls" in printed
    assert "read 1 feedback" in printed
    assert "2 unreadable log entries were skipped" in printed
    assert out.exists()


def test_report_skips_and_counts_unreadable_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _damaged_log(tmp_path / "log")
    assert main(["report", "--calllog", str(log)]) == 0
    assert "2 call-log entries could not be read" in capsys.readouterr().out


def test_export_refuses_a_directory_as_out_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, out = _damaged_log(tmp_path / "log"), tmp_path / "out"
    out.mkdir()
    before = sorted(os.listdir(tmp_path))
    assert main(["export", "--calllog", str(log), "--out", str(out)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(out) == []


def test_export_removes_its_partial_file_when_writing_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, out = _damaged_log(tmp_path / "log"), tmp_path / "out.jsonl"

    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(Path, "replace", refuse)
    assert main(["export", "--calllog", str(log), "--out", str(out)]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["log"]


def test_route_refuses_a_prompt_that_is_not_utf8(capsys: pytest.CaptureFixture[str]) -> None:
    # How Python hands on argument bytes that are not UTF-8 (PEP 383).
    prompt = os.fsdecode(b"bad \xff bytes")
    # Nothing listens on port 1: the call is never tried.
    assert main(["route", prompt, "--target", "127.0.0.1:1", "--timeout", "1"]) == 2
    assert "the prompt is not valid UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("feedback", "--key"),
        ("budget", "--key"),
        ("simulate-traffic", "--target"),
    ],
)
def test_every_command_refuses_text_arguments_that_are_not_utf8(
    command: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser_args = {
        "feedback": ["feedback", "req-1", "--score", "1"],
        "budget": ["budget", "show", "demo"],
        "simulate-traffic": [
            "simulate-traffic",
            "--data",
            "x.jsonl",
            "--weak",
            "w",
            "--strong",
            "s",
        ],
    }[command]
    assert main([*parser_args, option, os.fsdecode(b"\xff")]) == 2
    assert f"{option} is not valid UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--system", "--task", "--model", "--key", "--target"])
def test_route_and_explain_refuse_options_that_are_not_utf8(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("route", "explain"):
        argv = [command, "hello", "--target", "127.0.0.1:1", "--timeout", "1"]
        assert main([*argv, option, os.fsdecode(b"\xff")]) == 2
        assert f"{option} is not valid UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(b'{"id": "\xff"}', "not valid UTF-8"), (DEEP, "not valid JSON: nested too deeply")],
)
def test_simulate_traffic_refuses_a_file_it_cannot_read_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: bytes, reason: str
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(json.dumps(OUTCOME_ROW).encode() + b"\n" + bad + b"\n")
    argv = ["simulate-traffic", "--data", str(data), "--target", "127.0.0.1:1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("llm-router: ") and f"data.jsonl:2: {reason}" in err


def _rows_of(path: Path, *models: list[str]) -> Path:
    """An outcome file with a row per list of models, each row with outcomes of those models."""
    outcome = OUTCOME_ROW["outcomes"]["strong"]
    rows = [{**OUTCOME_ROW, "outcomes": dict.fromkeys(names, outcome)} for names in models]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_simulate_traffic_refuses_a_pair_no_row_has_naming_the_data_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _rows_of(tmp_path / "data.jsonl", ["weak", "strong"], ["weak", "other"])
    pair = ["--weak", "weak", "--strong", "strnog"]
    # Refused before any call (nothing listens on port 1).
    assert main(["simulate-traffic", "--data", str(data), *pair, "--target", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err == (
        "llm-router: no row has outcomes of both 'weak' and 'strnog'; "
        "the data's models: other, strong, weak\n"
    )


def test_simulate_traffic_says_up_front_how_many_rows_lack_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _rows_of(tmp_path / "data.jsonl", ["weak", "strong"], ["weak"], ["other"])
    pair = ["--weak", "weak", "--strong", "strong", "--timeout", "1"]
    assert main(["simulate-traffic", "--data", str(data), *pair, "--target", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err.startswith(
        "note: 2 of 3 rows lack an outcome of 'weak' or 'strong': a call gets no feedback when "
        "routed to the tier whose model its row lacks\n"
    )


@pytest.mark.parametrize("command", [["report"], ["export", "--out", "out.jsonl"]])
def test_report_and_export_refuse_a_redis_url_without_scheme(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--redis", "default:hunter2@cache:6379"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "llm-router: --redis is not a Redis URL: expected redis://HOST:PORT[/DB], "
        "rediss://... (TLS) or unix:///path/to/socket\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["explain", "hi", "--max-output-tokens", "99999999999"],
            "argument --max-output-tokens: expected a whole number from 0 to 2147483647",
        ),
        (["route", "hi", "--timeout", "0"], "argument --timeout: expected a number of seconds"),
        (["budget", "show", "demo", "--timeout", "-1"], "argument --timeout: expected a number"),
        (
            ["explain", "hi", "--target", "http://127.0.0.1:50051"],
            "argument --target: expected HOST:PORT, not a URL",
        ),
        (["report", "--target", "https://router:443"], "argument --target: expected HOST:PORT"),
    ],
)
def test_client_options_out_of_range_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused while parsing, before any call (a max_output_tokens past int32 was a ValueError
    # traceback from protobuf; a timeout of 0 a DEADLINE_EXCEEDED from the call).
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["route", "hi"],
        ["explain", "hi"],
        ["feedback", "req-1", "--score", "1"],
        ["budget", "show", "demo"],
        ["classifier", "show"],
    ],
)
def test_a_router_that_is_not_there_is_named_with_what_to_do(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 1.
    assert main([*argv, "--target", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err == (
        "llm-router: UNAVAILABLE: cannot reach the router at 127.0.0.1:1 (Connection refused); "
        "start it with `llm-router serve`, or give its address with --target or LLM_ROUTER_TARGET\n"
    )


def test_simulate_traffic_says_when_no_router_answered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(OUTCOME_ROW) + "\n")
    assert main(["simulate-traffic", "--data", str(data), "--target", "127.0.0.1:1"]) == 1
    out = capsys.readouterr().out
    assert "routed 0 of 1 prompts in " in out and "s (0 explored), $0.0000;" in out
    assert "  1 failed: UNAVAILABLE: cannot reach the router at 127.0.0.1:1 (Connection " in out


def test_route_cache_sends_temperature_zero_and_refuses_another() -> None:
    """The response cache serves temperature-0 requests only: `--cache` alone asks for 0 (it
    used to send no temperature, and the call went uncached without a word)."""
    from router_service.cli import build_parser
    from router_service.cli.client import _request

    parser = build_parser()
    cached = _request(parser.parse_args(["route", "hi", "--cache"]))
    assert cached.hints.response_cache and cached.HasField("temperature")
    assert cached.temperature == 0.0
    assert not _request(parser.parse_args(["route", "hi"])).HasField("temperature")
    warm = _request(parser.parse_args(["route", "hi", "--temperature", "0.7"]))
    assert warm.temperature == 0.7 and not warm.hints.response_cache
    with pytest.raises(SystemExit) as exited:
        _request(parser.parse_args(["route", "hi", "--cache", "--temperature", "0.7"]))
    assert exited.value.code == 2
