"""The README's loop by its commands: simulate traffic with feedback, export, report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from router_service.calllog.outcomes import check_outcome_row
from router_service.cli import main
from tests.support.configs import fast_config
from tests.support.servers import running_router

pytestmark = pytest.mark.integration


def dataset(path: Path, rows: int) -> None:
    """An outcome dataset like the public ones: a weak and a strong model's scores."""
    with path.open("w") as out:
        for i in range(rows):
            row = {
                "id": f"q{i}",
                "source": "test",
                "split": "train",
                "task": None,
                "messages": [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}],
                "outcomes": {
                    "weak-model": {"score": float(i % 2), "cost_usd": None, "response": None},
                    "strong-model": {"score": 1.0, "cost_usd": None, "response": None},
                },
            }
            out.write(json.dumps(row) + "\n")


async def test_traffic_feedback_export_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, calllog = tmp_path / "data.jsonl", tmp_path / "calllog"
    dataset(data, 24)
    config = fast_config(
        exploration={"rate": 0.25, "shadow_rate": 1.0},
        call_log={"enabled": True, "directory": str(calllog), "flush_interval_s": 0.01},
    )
    async with running_router(config) as running:
        code = await asyncio.to_thread(
            main,
            [
                "simulate-traffic",
                "--data", str(data),
                "--limit", "20",
                "--concurrency", "4",
                "--weak", "weak-model",
                "--strong", "strong-model",
                "--target", running.target,
            ],
        )  # fmt: skip
        assert code == 0
        assert "routed 20 of 20 prompts" in capsys.readouterr().out
        shadow = running.server.feedback_loop.shadow if running.server.feedback_loop else None
        assert shadow is not None
        for _ in range(250):
            if shadow.in_flight == 0:
                break
            await asyncio.sleep(0.02)
        png = tmp_path / "report.png"
        report_args = ["report", "--calllog", str(calllog), "--png", str(png)]
        code = await asyncio.to_thread(main, [*report_args, "--target", running.target])
        assert code == 0
    report = capsys.readouterr().out
    assert "demo:shadow" in report and "costliest tasks" in report
    assert png.read_bytes()[:4] == b"\x89PNG"

    out = tmp_path / "outcomes.jsonl"
    code = await asyncio.to_thread(
        main,
        ["export", "--calllog", str(calllog), "--out", str(out), "--served-score", "feedback"],
    )
    assert code == 0
    assert "exported 20 rows (20 with both arms)" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row in rows:
        check_outcome_row(row)
    # Every row has a cheap and a frontier model; the served one scored by feedback.
    assert all(len(row["outcomes"]) == 2 for row in rows)
    models = {model for row in rows for model in row["outcomes"]}
    assert {"glm-5.2", "gpt-5.5"} <= models
    for row in rows:
        # The served model's score is the dataset's score for its tier, sent as feedback:
        # the weak model's (0 or 1 by question) when cheap served, 1.0 when frontier did.
        i = int(row["messages"][0]["content"].split(":")[0].removeprefix("Question "))
        outcomes = row["outcomes"]
        cheap = outcomes.get("glm-5.2", outcomes.get("kimi-2.7"))
        frontier = outcomes.get("gpt-5.5", outcomes.get("claude-opus-4.8"))
        assert cheap is not None and frontier is not None
        assert cheap["score"] == float(i % 2) or frontier["score"] == 1.0
        assert cheap["response"] and frontier["response"]
