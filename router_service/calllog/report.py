"""`llm-router report`'s numbers: spend, routing mix, cache hit rates and budget state per app,
and the costliest tasks, computed from call-log entries, rendered as a terminal table.

Pure: entries in, a `Report` out, text out. The rates follow SPEC.md, defined as
`Admin.GetStats` defines them (router_service/stats.py): prompt-cache hit rate is the share of
provider-served calls with cached input tokens, the cached-token share is the share of their
input tokens billed at the cached price, and the response-cache hit rate is the share of calls
(refusals excluded) served from the response cache. Each is shown per app and for all apps,
with the calls refused by a limit and the requests refused as invalid. The routing mix (tier,
arm, model) is that of the calls sent to a model, as in `Admin.GetStats`: response-cache hits
and refusals are in none of it.
Budget state comes from the server (`Admin.GetBudget`) when the command is given a target;
otherwise the report shows this month's spend from the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

from router_service.calllog.entries import Feedback, LogEntry
from router_service.cost import micro_to_usd
from router_service.records import CallRecord, CallStatus

__all__ = ["AppSummary", "Budget", "Report", "render", "summarize"]


@dataclass(frozen=True, slots=True)
class Budget:
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    state: str
    period: str
    # Share of the limit past which calls downgrade; None when the app has no limit.
    soft_threshold: float | None = None


@dataclass
class AppSummary:
    app: str
    # Every call in the log, refusals included.
    requests: int = 0
    # Refused by a limit (budget, rate) after the decision.
    refused: int = 0
    # Refused as invalid before any decision.
    invalid: int = 0
    # Calls a provider answered (not from the response cache).
    provider_calls: int = 0
    spent_micro_usd: int = 0
    # Spend in the current UTC calendar month (what a monthly budget counts).
    month_micro_usd: int = 0
    # The routing mix: calls sent to a tier's models, by tier, arm and answering model, as
    # `stats.counts_of` counts them (refusals and response-cache hits are in neither).
    by_tier: Counter[str] = field(default_factory=Counter)
    by_arm: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    task_micro_usd: Counter[str] = field(default_factory=Counter)
    task_requests: Counter[str] = field(default_factory=Counter)
    prompt_cache_hits: int = 0
    response_cache_hits: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    budget: Budget | None = None

    @property
    def spent_usd(self) -> float:
        return micro_to_usd(self.spent_micro_usd)

    @property
    def prompt_cache_hit_rate(self) -> float:
        return self.prompt_cache_hits / self.provider_calls if self.provider_calls else 0.0

    @property
    def cached_input_token_share(self) -> float:
        return self.cached_input_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def response_cache_hit_rate(self) -> float:
        admitted = self.requests - self.refused - self.invalid
        return self.response_cache_hits / admitted if admitted else 0.0

    def add(self, other: AppSummary) -> None:
        """Count `other`'s calls in too (the overall row): every count and counter."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            elif isinstance(mine, int):
                setattr(self, f.name, mine + theirs)

    @property
    def routed(self) -> int:
        """Calls in the routing mix (sent to a tier's models)."""
        return sum(self.by_tier.values())

    def tier_share(self, tier: str) -> float:
        return self.by_tier[tier] / self.routed if self.routed else 0.0

    @property
    def explored_share(self) -> float:
        return self.by_arm["explore"] / self.routed if self.routed else 0.0


@dataclass(frozen=True, slots=True)
class CostlyTask:
    app: str
    task: str
    spent_usd: float
    requests: int


@dataclass
class Report:
    apps: dict[str, AppSummary] = field(default_factory=dict)
    feedback: int = 0
    grades: int = 0
    # Entries the reader could not parse.
    malformed: int = 0
    # Why budget state is missing, when it is.
    budget_note: str = ""

    def app(self, name: str) -> AppSummary:
        summary = self.apps.get(name)
        if summary is None:
            summary = self.apps[name] = AppSummary(name)
        return summary

    def overall(self) -> AppSummary:
        """Every app's calls together."""
        total = AppSummary("all apps")
        for summary in self.apps.values():
            total.add(summary)
        return total

    def costliest_tasks(self, limit: int = 5) -> list[CostlyTask]:
        tasks = [
            CostlyTask(s.app, task, micro_to_usd(micro), s.task_requests[task])
            for s in self.apps.values()
            for task, micro in s.task_micro_usd.items()
        ]
        return sorted(tasks, key=lambda t: (-t.spent_usd, t.app, t.task))[:limit]


def summarize(entries: Iterable[LogEntry], *, now: datetime | None = None) -> Report:
    month = (now or datetime.now(UTC)).strftime("%Y-%m")
    report = Report()
    for entry in entries:
        if isinstance(entry, Feedback):
            report.feedback += 1
            continue
        if not isinstance(entry, CallRecord):
            report.grades += 1
            continue
        s = report.app(entry.app)
        d = entry.decision
        s.requests += 1
        if d is None:
            s.invalid += 1
            continue
        s.spent_micro_usd += entry.cost_micro_usd
        s.task_micro_usd[d.task] += entry.cost_micro_usd
        s.task_requests[d.task] += 1
        if datetime.fromtimestamp(entry.started_at, UTC).strftime("%Y-%m") == month:
            s.month_micro_usd += entry.cost_micro_usd
        if entry.status == CallStatus.REFUSED:
            s.refused += 1
            continue
        if entry.served_from_cache:
            s.response_cache_hits += 1
            continue
        s.by_tier[d.tier.value] += 1
        s.by_arm[d.arm] += 1
        if entry.status == CallStatus.OK and entry.model:
            s.by_model[entry.model] += 1
            if entry.usage.input_tokens:
                s.provider_calls += 1
                s.input_tokens += entry.usage.input_tokens
                s.cached_input_tokens += entry.usage.cached_input_tokens
                s.prompt_cache_hits += entry.prompt_cache_hit
    return report


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def _budget(s: AppSummary) -> str:
    b = s.budget
    if b is None:
        return f"${micro_to_usd(s.month_micro_usd):.4f} this month"
    if b.limit_usd <= 0:
        return f"no limit; ${b.spent_usd:.4f} spent ({b.period})"
    used = (b.spent_usd + b.reserved_usd) / b.limit_usd
    return f"{b.state}: ${b.spent_usd:.2f} of ${b.limit_usd:.2f} ({_percent(used)}, {b.period})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def render(report: Report) -> str:
    """The report as a terminal table."""
    if not report.apps:
        skipped = (
            f" ({report.malformed} call-log entries could not be read and were skipped)"
            if report.malformed
            else ""
        )
        return f"no calls in the call log for this period{skipped}\n"
    apps = sorted(report.apps.values(), key=lambda s: (-s.spent_micro_usd, s.app))
    overall = report.overall()
    header = [
        "app",
        "requests",
        "spend USD",
        "cheap",
        "frontier",
        "explored",
        "prompt-cache hits",
        "cached input",
        "response-cache hits",
        "refused",
        "invalid",
        "budget",
    ]
    rows = [
        [
            s.app,
            str(s.requests),
            f"{s.spent_usd:.6f}",
            _percent(s.tier_share("cheap")),
            _percent(s.tier_share("frontier")),
            _percent(s.explored_share),
            _percent(s.prompt_cache_hit_rate),
            _percent(s.cached_input_token_share),
            _percent(s.response_cache_hit_rate),
            str(s.refused),
            str(s.invalid),
            "" if s is overall else _budget(s),
        ]
        for s in [*apps, overall]
    ]
    lines = [
        *_table(header, rows),
        f"total spend ${overall.spent_usd:.6f} over {overall.requests} calls"
        f" ({overall.refused} refused, {overall.invalid} invalid); {report.feedback} feedback,"
        f" {report.grades} judge grades",
        "",
        "costliest tasks",
        *_table(
            ["app", "task", "spend USD", "requests"],
            [
                [t.app, t.task, f"{t.spent_usd:.6f}", str(t.requests)]
                for t in report.costliest_tasks()
            ],
        ),
    ]
    if report.budget_note:
        lines += ["", report.budget_note]
    if report.malformed:
        lines += ["", f"{report.malformed} call-log entries could not be read and were skipped"]
    return "\n".join(lines) + "\n"
