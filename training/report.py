"""Showing an evaluation to people: a fixed-width table and a cost-quality plot."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from training.evaluation import PairEvaluation

__all__ = ["format_table", "plot_curves"]

COLUMNS = (
    ("apgr", "APGR"),
    ("cpt50", "CPT(50%)"),
    ("cpt80", "CPT(80%)"),
    ("strong_share_at_95", "strong@95%"),
    ("cost_ratio_at_95", "cost@95%"),
)
ROUTERS = ("router", "random", "prompt_length", "always_weak", "always_strong")


def format_table(report: Mapping[str, Any], title: str = "") -> str:
    """The router and baselines, one line each; "-" where a metric does not apply."""
    name_width = max(len(name) for name in ROUTERS)
    header = f"{'':<{name_width}}  " + "  ".join(f"{label:>10}" for _, label in COLUMNS)
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for name in ROUTERS:
        metrics = report if name == "router" else report["baselines"][name]
        cells = "  ".join(f"{_cell(metrics.get(key)):>10}" for key, _ in COLUMNS)
        lines.append(f"{name:<{name_width}}  {cells}")
    lines.append(
        f"{report['rows']} prompts; quality weak {report['weak_quality']:.3f}, "
        f"strong {report['strong_quality']:.3f}; costs: {report['cost_basis']}; "
        "shares are of strong calls, costs relative to always-strong"
    )
    return "\n".join(lines)


def plot_curves(evaluation: PairEvaluation, path: pathlib.Path, title: str) -> None:
    """A PNG with quality against cost (left) and against strong-call share (right)."""
    report = evaluation.report
    strong_q, weak_q = report["strong_quality"], report["weak_quality"]
    weak_cost = report["baselines"]["always_weak"]["cost_ratio"]
    # The object-oriented API renders with Agg and never touches a display or pyplot state.
    figure = Figure(figsize=(12, 5))
    by_cost, by_share = figure.subplots(1, 2)
    for name, style in (("router", "-"), ("prompt_length", ":")):
        points = evaluation.curves[name]
        shares = [p[0] for p in points]
        qualities = [p[1] for p in points]
        costs = [p[2] for p in points]
        by_cost.plot(costs, qualities, style, label=name)
        by_share.plot(shares, qualities, style, label=name)
    by_cost.plot([weak_cost, 1.0], [weak_q, strong_q], "--", color="grey", label="random")
    by_share.plot([0.0, 1.0], [weak_q, strong_q], "--", color="grey", label="random")
    for axes in (by_cost, by_share):
        axes.axhline(
            report["quality_target"] * strong_q,
            color="red",
            lw=0.8,
            ls="-.",
            label=f"{report['quality_target']:.0%} of strong quality",
        )
        axes.set_ylabel("mean quality")
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right")
    by_cost.scatter([weak_cost, 1.0], [weak_q, strong_q], color="black", zorder=3)
    by_cost.annotate(
        "always weak", (weak_cost, weak_q), textcoords="offset points", xytext=(5, -12)
    )
    by_cost.annotate("always strong", (1.0, strong_q), textcoords="offset points", xytext=(-80, 6))
    by_cost.set_xlabel("cost relative to always-strong")
    by_share.set_xlabel("share of strong calls")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"
