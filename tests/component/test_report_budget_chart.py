"""`llm-router report --target --png`: the chart's budget panel from a running router."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from router_service.calllog import chart
from router_service.calllog.codec import dumps
from router_service.calllog.report import Report
from router_service.cli import main
from tests.support.configs import ADMIN_KEY
from tests.support.records import call_record
from tests.support.servers import Running


async def test_the_chart_shows_the_servers_budget_and_soft_threshold(
    router: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calllog = tmp_path / "calllog"
    calllog.mkdir()
    now = time.time()
    records = [call_record(started_at=now), call_record(app="ghost", started_at=now)]
    lines = "".join(dumps(replace(r, request_id=f"req-{i}")) + "\n" for i, r in enumerate(records))
    (calllog / f"calllog-{time.strftime('%Y-%m-%d', time.gmtime(now))}.jsonl").write_text(lines)
    figures: list[Figure] = []
    build_figure = chart.build_figure

    def build(report: Report) -> Figure:
        figures.append(build_figure(report))
        return figures[-1]

    monkeypatch.setattr(chart, "build_figure", build)
    png = tmp_path / "report.png"
    args = ["report", "--calllog", str(calllog), "--png", str(png)]
    code = await asyncio.to_thread(
        main, [*args, "--target", router.target, "--admin-key", ADMIN_KEY]
    )
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"

    (figure,) = figures
    panel = next(axes for axes in figure.axes if axes.get_title().startswith("Budget this month"))
    texts = {t.get_text().strip() for t in panel.texts}
    # The embedded demo app: $50 a month, soft at 80%; "ghost" is not configured there.
    assert "ok: $0.00 of $50.00 (0%)" in texts
    assert "no budget state; $0.0004 this month (log)" in texts
    assert 80.0 in {float(np.asarray(line.get_xdata())[0]) for line in panel.lines}
