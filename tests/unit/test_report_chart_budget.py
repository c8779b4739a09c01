"""The report chart's budget panel: spend and holds against each app's limit, or why not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from router_service.calllog.chart import build_figure, write_chart
from router_service.calllog.report import Budget, Report, summarize
from tests.support.records import call_record
from tests.unit.test_report import NOW, traffic

PNG = b"\x89PNG\r\n\x1a\n"


def report() -> Report:
    extra = [call_record(app=app, cost_micro_usd=700) for app in ("batch", "ghost", "support")]
    return summarize([*traffic(), *extra], now=NOW)  # type: ignore[list-item]


def budget_panel(figure: Figure) -> Axes:
    titles = [axes.get_title() for axes in figure.axes]
    assert len(titles) == 5 and {"Spend (USD)", "Costliest tasks (USD)"} <= set(titles)
    return next(axes for axes in figure.axes if axes.get_title().startswith("Budget"))


def test_the_budget_panel_shows_spend_and_holds_against_the_limit(tmp_path: Path) -> None:
    r = report()
    r.apps["demo"].budget = Budget(10.0, 8.5, 0.5, "soft", "2025-05", 0.8)
    r.apps["bot"].budget = Budget(50.0, 0.48, 0.02, "ok", "2025-05", 0.8)
    r.apps["support"].budget = Budget(5.0, 5.2, 0.0, "exhausted", "2025-05", 0.9)
    r.apps["batch"].budget = Budget(0.0, 1.25, 0.0, "ok", "2025-05")  # no limit
    # "ghost": the server has no such app (no budget state).
    panel = budget_panel(build_figure(r))

    assert panel.get_title() == "Budget this month (2025-05): spent + reserved of the limit"
    assert panel.get_xlabel() == "% of the monthly limit"
    # By spend, as in the other panels: bot spent $0.0009 in the log, the others $0.0007.
    names = [t.get_text() for t in panel.get_yticklabels()]
    assert names == ["demo", "bot", "batch", "ghost", "support"]
    labels = list(panel.texts)
    texts = {t.get_text().strip() for t in labels}
    assert {
        "soft: $8.50 + $0.50 reserved of $10.00 (90%)",
        "exhausted: $5.20 of $5.00 (104%)",
        "no limit: $1.25 spent",
        "no budget state; $0.0007 this month (log)",
        "ok: $0.48 + $0.02 reserved of $50.00 (1%)",
    } == texts
    # Dollar amounts are text, not mathtext between two "$".
    assert not any(t.get_parse_math() for t in labels)
    # Spent and reserved bars (% of the limit) for the three apps with a limit.
    bars = [bar for bar in panel.patches if isinstance(bar, Rectangle)]
    assert len(bars) == len(panel.patches)
    widths = sorted(round(bar.get_width(), 6) for bar in bars)
    assert widths == sorted([85.0, 5.0, 104.0, 0.0, 0.96, 0.04])
    # A soft-threshold tick per app that has one, and the limit line at 100%.
    ticks = {float(np.asarray(line.get_xdata())[0]) for line in panel.lines}
    assert {80.0, 90.0, 100.0} <= ticks
    legend = panel.get_legend()
    assert legend is not None
    assert {t.get_text() for t in legend.get_texts()} == {
        "ok",
        "soft",
        "exhausted",
        "reserved",
        "limit",
        "soft threshold",
    }

    path = tmp_path / "report.png"
    write_chart(r, path)
    assert path.read_bytes()[:8] == PNG


def test_without_budget_state_the_panel_says_so(tmp_path: Path) -> None:
    r = report()
    r.budget_note = "budget: this month's spend from the log; --target shows limits"
    panel = budget_panel(build_figure(r))

    assert panel.get_title().startswith("Budget state: not read from the server")
    assert panel.get_xlabel() == "USD this month (from the call log)"
    texts = [t.get_text().strip() for t in panel.texts]
    assert r.budget_note in texts and "$0.0085 this month" in texts
    assert not panel.lines  # no limit line, no soft thresholds
    assert panel.get_legend() is None

    path = tmp_path / "report.png"
    write_chart(r, path)
    assert path.read_bytes()[:8] == PNG


def test_an_empty_report_still_draws() -> None:
    panel = budget_panel(build_figure(Report()))
    assert panel.texts[-1].get_text().startswith("run with --target")
