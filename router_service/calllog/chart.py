"""`llm-router report --png`: the report as one PNG with four panels.

Spend per app, routing mix per app (cheap / frontier, explored share marked), cache hit rates
per app, and the costliest tasks. Imports matplotlib (the `training` extra), so only the
command that draws imports this module; it uses matplotlib's object API, no global state.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from router_service.calllog.report import Report

__all__ = ["write_chart"]

_CHEAP, _FRONTIER, _PROMPT, _RESPONSE = "#4c9f70", "#c0504d", "#4f81bd", "#f0a030"


def write_chart(report: Report, path: Path) -> None:
    apps = sorted(report.apps.values(), key=lambda s: (-s.spent_micro_usd, s.app))
    names = [s.app for s in apps]
    positions = list(range(len(apps)))
    figure = Figure(figsize=(13, 9), layout="constrained")
    figure.suptitle("LLM Router: spend, routing mix and cache hit rates per app")
    spend, mix, caches, tasks = figure.subplots(2, 2).flat

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
    mix.set_title("Routing mix (% of calls)")
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

    figure.savefig(path, dpi=110)
