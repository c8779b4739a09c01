"""`llm-router report --png`: the report as one PNG with five panels.

Spend per app, routing mix per app (cheap / frontier, explored share marked), cache hit rates
per app, the costliest tasks, and budget state per app: this month's spend and holds against
the limit, the soft threshold marked (from the server with `--target`; without it, this month's
spend from the log and why there is no budget state). Imports matplotlib (the `training` extra),
so only the command that draws imports this module; it uses matplotlib's object API, no global
state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from router_service.calllog.report import AppSummary, Report
from router_service.cost import micro_to_usd

__all__ = ["build_figure", "write_chart"]

_CHEAP, _FRONTIER, _PROMPT, _RESPONSE = "#4c9f70", "#c0504d", "#4f81bd", "#f0a030"
_STATE = {"ok": _CHEAP, "soft": _RESPONSE, "exhausted": _FRONTIER}
_NO_STATE = "#a0a0a0"
# Budget labels: dollar amounts, so no mathtext ("$5.20 of $5.00" is not a formula).
_LABEL: dict[str, Any] = {"fontsize": 9, "parse_math": False}


def write_chart(report: Report, path: Path) -> None:
    build_figure(report).savefig(path, dpi=110)


def build_figure(report: Report) -> Figure:
    """The chart (each budget's soft threshold, where the report has one, marked)."""
    apps = sorted(report.apps.values(), key=lambda s: (-s.spent_micro_usd, s.app))
    names = [s.app for s in apps]
    positions = list(range(len(apps)))
    budget_height = 1.5 + 0.35 * max(len(apps), 1)
    figure = Figure(figsize=(13, 9 + budget_height), layout="constrained")
    figure.suptitle("LLM Router: spend, routing mix, cache hit rates and budget state per app")
    panels = figure.subplot_mosaic(
        [["spend", "mix"], ["caches", "tasks"], ["budget", "budget"]],
        height_ratios=[4.5, 4.5, budget_height],
    )
    spend, mix, caches, tasks = (panels[k] for k in ("spend", "mix", "caches", "tasks"))

    spend.bar(positions, [s.spent_usd for s in apps], color=_FRONTIER)
    spend.set_title("Spend (USD)")

    cheap = [100 * s.tier_share("cheap") for s in apps]
    frontier = [100 * s.tier_share("frontier") for s in apps]
    mix.bar(positions, cheap, color=_CHEAP, label="cheap")
    mix.bar(positions, frontier, bottom=cheap, color=_FRONTIER, label="frontier")
    for x, s in zip(positions, apps, strict=True):
        explored = s.by_arm["explore"]
        if explored:
            mix.annotate(f"{explored} explored", (x, 101), ha="center", fontsize=8)
    mix.set_title("Routing mix (% of calls sent to a model)")
    mix.set_ylim(0, 110)
    mix.legend(loc="lower right")

    width = 0.4
    caches.bar(
        [x - width / 2 for x in positions],
        [100 * s.prompt_cache_hit_rate for s in apps],
        width,
        color=_PROMPT,
        label="prompt cache",
    )
    caches.bar(
        [x + width / 2 for x in positions],
        [100 * s.response_cache_hit_rate for s in apps],
        width,
        color=_RESPONSE,
        label="response cache",
    )
    caches.set_title("Cache hit rate (% of calls)")
    caches.set_ylim(0, 100)
    caches.legend(loc="upper right")

    for axes in (spend, mix, caches):
        axes.set_xticks(positions, names, rotation=20, ha="right")

    costly = list(reversed(report.costliest_tasks(8)))
    tasks.barh(range(len(costly)), [t.spent_usd for t in costly], color=_FRONTIER, tick_label=None)
    tasks.set_yticks(range(len(costly)), [f"{t.app} / {t.task}" for t in costly])
    tasks.set_title("Costliest tasks (USD)")

    _budget_panel(panels["budget"], apps, report.budget_note)
    return figure


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"


def _budget_panel(axes: Axes, apps: list[AppSummary], note: str) -> None:
    """Per app, spent + reserved as % of the monthly limit, coloured by state."""
    rows = list(range(len(apps)))
    axes.set_yticks(rows, [s.app for s in apps])
    axes.set_ylim(max(len(apps), 1) - 0.5, -0.5)  # the costliest app on top, as in the other panels
    if not any(s.budget for s in apps):
        # No budget state (no --target, or the server did not answer): this month's spend
        # from the log, as the table shows it, and the report's reason.
        month = [micro_to_usd(s.month_micro_usd) for s in apps]
        axes.barh(rows, month, color=_NO_STATE)
        for y, usd in zip(rows, month, strict=True):
            axes.annotate(f" {_usd(usd)} this month", (usd, y), va="center", **_LABEL)
        axes.set_title("Budget state: not read from the server; this month's spend from the log")
        axes.set_xlabel("USD this month (from the call log)")
        axes.set_xlim(0, max([*month, 1e-6]) * 1.3)
        axes.text(
            0.99,
            0.03,
            note or "run with --target HOST:PORT to read budget state from the server",
            transform=axes.transAxes,
            ha="right",
            va="bottom",
            fontsize=10,
            parse_math=False,
            bbox={"boxstyle": "round", "facecolor": "#fff8e0", "edgecolor": _RESPONSE},
        )
        return
    periods = sorted({s.budget.period for s in apps if s.budget})
    axes.set_title(f"Budget this month ({', '.join(periods)}): spent + reserved of the limit")
    # Why some apps have no budget state, when the server stopped answering part way.
    axes.set_xlabel("% of the monthly limit" + (f"\n{note}" if note else ""), parse_math=False)
    top = 100.0
    for y, s in zip(rows, apps, strict=True):
        b = s.budget
        if b is None:
            label = f" no budget state; {_usd(micro_to_usd(s.month_micro_usd))} this month (log)"
            axes.annotate(label, (0, y), va="center", color="dimgray", **_LABEL)
            continue
        if b.limit_usd <= 0:
            axes.annotate(f" no limit: {_usd(b.spent_usd)} spent", (0, y), va="center", **_LABEL)
            continue
        spent, reserved = 100 * b.spent_usd / b.limit_usd, 100 * b.reserved_usd / b.limit_usd
        color = _STATE.get(b.state, _NO_STATE)
        axes.barh(y, spent, color=color)
        axes.barh(y, reserved, left=spent, color=color, alpha=0.35, hatch="//")
        soft = b.soft_threshold
        if soft is not None:
            axes.plot([100 * soft] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
        held = f" + {_usd(b.reserved_usd)} reserved" if b.reserved_usd else ""
        label = (
            f" {b.state}: {_usd(b.spent_usd)}{held} of {_usd(b.limit_usd)}"
            f" ({spent + reserved:.0f}%)"
        )
        axes.annotate(label, (max(spent + reserved, 100), y), va="center", **_LABEL)
        top = max(top, spent + reserved)
    axes.axvline(100, color="dimgray", linestyle="--", linewidth=1)
    axes.set_xlim(0, top * 1.7)
    axes.set_xticks([0, 25, 50, 75, 100])
    key = [Patch(color=color, label=state) for state, color in _STATE.items()]
    key.append(Patch(facecolor="white", edgecolor="gray", hatch="//", label="reserved"))
    marks = [Line2D([], [], color="dimgray", linestyle="--", label="limit")]
    if any(s.budget and s.budget.soft_threshold is not None for s in apps):
        marks.append(Line2D([], [], color="black", linewidth=2, label="soft threshold"))
    axes.legend(handles=[*key, *marks], loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
