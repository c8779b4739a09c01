"""The report's numbers, table and chart."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from router_service.calllog.codec import dumps
from router_service.calllog.report import Budget, render, summarize
from router_service.cli import main
from router_service.config import Tier
from router_service.cost import Usage
from router_service.records import CallStatus, invalid_call
from tests.support.records import DECISION, call_record, feedback, grade

NOW = datetime(2025, 5, 20, tzinfo=UTC)


def traffic() -> list[object]:
    frontier = replace(DECISION, tier=Tier.FRONTIER, model="gpt-5.5", task="code_review")
    explored = replace(DECISION, tier=Tier.FRONTIER, model="gpt-5.5", arm="explore")
    return [
        call_record(),  # cheap, cached input (1024 of 1200), $0.00042, May
        call_record(usage=Usage(input_tokens=800, output_tokens=50), cost_micro_usd=100),
        call_record(decision=frontier, model="gpt-5.5", cost_micro_usd=5000),
        call_record(decision=explored, model="gpt-5.5", cost_micro_usd=3000),
        call_record(served_from_cache=True, cost_micro_usd=0, usage=Usage()),
        call_record(status=CallStatus.FAILED, model="", cost_micro_usd=0, usage=Usage()),
        call_record(app="bot", started_at=1_700_000_000.0, cost_micro_usd=900),  # Nov 2023
        feedback(),
        grade(),
    ]


def test_summary_per_app() -> None:
    report = summarize(traffic(), now=NOW)  # type: ignore[arg-type]
    demo = report.apps["demo"]
    assert demo.requests == 6 and demo.provider_calls == 4 and demo.refused == 0
    assert demo.spent_micro_usd == 420 + 100 + 5000 + 3000
    # The routing mix counts the 5 calls sent to a model (the failed one by its decided tier),
    # not the response-cache hit, in the tier mix and the model mix alike.
    assert demo.tier_share("frontier") == 2 / 5 and demo.explored_share == 1 / 5
    assert demo.by_tier == {"cheap": 3, "frontier": 2}
    assert demo.by_model == {"glm-5.2": 2, "gpt-5.5": 2}
    assert demo.by_arm["explore"] == 1
    # Cached input in calls 1, 3 and 4 (the test record's usage) of the 4 a provider answered
    # (the response-cache hit and the failed call are not provider-served calls).
    assert demo.prompt_cache_hit_rate == 3 / 4
    assert demo.cached_input_token_share == 3 * 1024 / (3 * 1200 + 800)
    assert demo.response_cache_hit_rate == 1 / 6
    assert demo.month_micro_usd == demo.spent_micro_usd
    assert report.apps["bot"].month_micro_usd == 0
    assert (report.feedback, report.grades) == (1, 1)
    top = report.costliest_tasks(2)
    assert [(t.app, t.task, t.spent_usd) for t in top] == [
        ("demo", "code_review", 0.005),
        ("demo", "summarization", 0.00352),
    ]


def test_the_table_shows_each_app_and_the_budget() -> None:
    report = summarize(traffic(), now=NOW)  # type: ignore[arg-type]
    report.apps["demo"].budget = Budget(10.0, 8.5, 0.5, "soft", "2025-05")
    text = render(report)
    demo_line = next(line for line in text.splitlines() if line.startswith("demo "))
    assert "0.008520" in demo_line and "75%" in demo_line and "17%" in demo_line
    assert "soft: $8.50 of $10.00 (90%, 2025-05)" in demo_line
    assert "costliest tasks" in text and "code_review" in text
    # Overall: both apps' calls, by the same definitions; no budget of its own.
    overall = report.overall()
    assert overall.requests == 7 and overall.provider_calls == 5
    assert overall.prompt_cache_hit_rate == 4 / 5 and overall.response_cache_hit_rate == 1 / 7
    all_line = next(line for line in text.splitlines() if line.startswith("all apps "))
    assert all_line.split()[2:4] == ["7", f"{overall.spent_usd:.6f}"]
    assert "total spend $0.009420 over 7 calls (0 refused, 0 invalid)" in text
    assert render(summarize([])) == "no calls in the call log for this period\n"
    unreadable = summarize([])
    unreadable.malformed = 3
    assert "3 call-log entries could not be read" in render(unreadable)


def test_refusals_count_as_calls_but_not_in_the_cache_rates() -> None:
    refused = call_record(status=CallStatus.REFUSED, model="", cost_micro_usd=0, usage=Usage())
    cached = call_record(served_from_cache=True, cost_micro_usd=0, usage=Usage())
    demo = summarize([refused, cached, call_record()], now=NOW).apps["demo"]
    assert (demo.requests, demo.refused, demo.provider_calls) == (3, 1, 1)
    assert demo.response_cache_hit_rate == 1 / 2 and demo.prompt_cache_hit_rate == 1.0
    # Neither the refusal nor the cache hit went to a model: the mix is the one call that did.
    assert demo.by_tier == {"cheap": 1} and demo.tier_share("cheap") == 1.0


def test_requests_refused_as_invalid_count_per_app_with_no_mix_or_task() -> None:
    invalid = invalid_call("bot", "", "hints.tier has unknown value 7")
    refused = call_record(status=CallStatus.REFUSED, model="", cost_micro_usd=0, usage=Usage())
    report = summarize([invalid, call_record(app="bot"), refused], now=NOW)
    bot = report.apps["bot"]
    assert (bot.requests, bot.invalid, bot.refused) == (2, 1, 0)
    assert bot.task_requests == {"summarization": 1} and bot.response_cache_hit_rate == 0.0
    text = render(report)
    bot_line = next(line for line in text.splitlines() if line.startswith("bot "))
    demo_line = next(line for line in text.splitlines() if line.startswith("demo "))
    # The refused and invalid columns, before the budget.
    assert bot_line.split()[9:11] == ["0", "1"] and demo_line.split()[9:11] == ["1", "0"]
    assert "over 3 calls (1 refused, 1 invalid)" in text


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    from router_service.calllog.chart import write_chart

    path = tmp_path / "report.png"
    write_chart(summarize(traffic(), now=NOW), path)  # type: ignore[arg-type]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000


def test_report_png_creates_the_chart_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calllog = tmp_path / "calllog"
    calllog.mkdir()
    lines = "".join(dumps(entry) + "\n" for entry in traffic())  # type: ignore[arg-type]
    (calllog / "calllog-2025-05-01.jsonl").write_text(lines, encoding="utf-8")
    png = tmp_path / "var" / "charts" / "report.png"
    assert main(["report", "--calllog", str(calllog), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"chart written to {png}" in capsys.readouterr().out


def _log_of_one_call(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "calllog-2025-05-01.jsonl").write_text(dumps(call_record()) + "\n")
    return directory


def test_report_reads_the_log_where_the_config_puts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from tests.support.configs import fast_raw

    monkeypatch.delenv("REDIS_URL", raising=False)
    calllog = _log_of_one_call(tmp_path / "elsewhere")
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(fast_raw(call_log={"directory": str(calllog)})))
    assert main(["report", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"call log: {calllog}" in out and "over 1 calls" in out
    config.write_text("call_log: {strem: x}\n")
    assert main(["report", "--config", str(config)]) == 2
    assert "invalid configuration" in capsys.readouterr().err


def test_report_without_config_reads_the_embedded_defaults_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded defaults write var/calllog under the working directory.
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    _log_of_one_call(tmp_path / "var" / "calllog")
    assert main(["report"]) == 0
    assert "over 1 calls" in capsys.readouterr().out


def test_report_lays_repeated_configs_over_each_other_as_serve_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from tests.support.configs import fast_raw

    monkeypatch.delenv("REDIS_URL", raising=False)
    calllog = _log_of_one_call(tmp_path / "elsewhere")
    base, layer = tmp_path / "router.yaml", tmp_path / "site.yaml"
    base.write_text(yaml.safe_dump(fast_raw()))
    layer.write_text(yaml.safe_dump({"call_log": {"directory": str(calllog)}}))
    assert main(["report", "--config", str(base), "--config", str(layer)]) == 0
    assert f"call log: {calllog}" in capsys.readouterr().out


def test_report_png_that_cannot_be_written_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calllog = _log_of_one_call(tmp_path / "calllog")
    (tmp_path / "a-file").write_text("")
    png = tmp_path / "a-file" / "report.png"
    assert main(["report", "--calllog", str(calllog), "--png", str(png)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"llm-router: cannot write the chart {png}: ") and err.count("\n") == 1
