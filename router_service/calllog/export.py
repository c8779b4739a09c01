"""Cost records, feedback and judge grades joined into outcome rows for training.

One row per successful call of an app that opted in to training data (only those records hold
the prompt). Outcomes, keyed by model:

- the model that served: the app's feedback score (the latest, when it sent several), or else
  the judge's grade of the served answer; its cost is the call's cost;
- the other tier's model, when the call was shadow-graded: the judge's grade of the shadow
  answer, with what the shadow call cost.

So a shadow-graded call yields both arms, which is what `llm-router train` learns from.
Feedback and the judge are different graders, possibly on different scales; so by default
(`served_score="judge"`) a shadow-graded call is scored by the judge for both arms, and feedback
scores only the calls that were not shadow-graded: each pair is compared by one grader.
Everything that cannot become a row is counted in `ExportSummary`, by reason, so an app that
forgot to opt in shows up in the summary instead of silently missing from the data.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from router_service.calllog.entries import Feedback, Grade, LogEntry
from router_service.cost import micro_to_usd
from router_service.records import CallRecord, CallStatus
from router_service.shadow import SHADOW_SUFFIX
from training.dataset import question_key

__all__ = ["ExportSummary", "build_outcomes"]

SOURCE_PREFIX = "llm-router/"


@dataclass
class ExportSummary:
    calls: int = 0
    rows: int = 0
    # Rows with outcomes of two models (shadow-graded calls).
    both_arms: int = 0
    # Calls that did not end with an answer (failed, broken, cancelled, refused).
    unanswered: int = 0
    # Requests refused as invalid before any decision: never rows, and not in `calls`.
    invalid: int = 0
    # Answered calls without prompt text, by app: the app has not opted in to training data.
    no_prompt: Counter[str] = field(default_factory=Counter)
    # Answered calls with prompt text but neither feedback nor a grade.
    no_outcome: int = 0
    # Answers replayed from the response cache.
    from_cache: int = 0
    # Feedback and grades for calls not in the exported range.
    unmatched: int = 0
    # Records of shadow and judge calls: spend only, never rows.
    shadow_calls: int = 0
    feedback: int = 0
    grades: int = 0


def _split(prompt: Sequence[tuple[str, str]], test_share: float) -> str:
    """A stable split by prompt: every call of the same (normalized) prompt falls on the same
    side, so a prompt seen in training never inflates the held-out figures."""
    digest = hashlib.blake2b(question_key(prompt).encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest) / 2**64 < test_share else "train"


def _outcome(score: float, cost_micro_usd: int, response: str | None) -> dict[str, Any]:
    return {"score": score, "cost_usd": micro_to_usd(cost_micro_usd), "response": response}


@dataclass
class _Joined:
    """The log indexed by (app, request id): the latest of each kind of entry."""

    calls: dict[tuple[str, str], CallRecord] = field(default_factory=dict)
    feedback: dict[tuple[str, str], Feedback] = field(default_factory=dict)
    grades: dict[tuple[str, str], Grade] = field(default_factory=dict)


def _join(entries: Iterable[LogEntry], summary: ExportSummary) -> _Joined:
    joined = _Joined()
    for entry in entries:
        key = (entry.app, entry.request_id)
        if isinstance(entry, CallRecord):
            if entry.decision is None:
                summary.invalid += 1
            elif entry.app.endswith(SHADOW_SUFFIX):
                summary.shadow_calls += 1
            else:
                joined.calls[key] = entry
        elif isinstance(entry, Feedback):
            summary.feedback += 1
            latest = joined.feedback.get(key)
            if latest is None or latest.at <= entry.at:
                joined.feedback[key] = entry
        else:
            summary.grades += 1
            joined.grades[key] = entry
    return joined


ServedScore = Literal["feedback", "judge"]


def _outcomes(
    record: CallRecord, given: Feedback | None, grade: Grade | None, served_score: ServedScore
) -> dict[str, dict[str, Any]]:
    outcomes: dict[str, dict[str, Any]] = {}
    served_response = grade.served.response if grade is not None else None
    if given is not None and (served_score == "feedback" or grade is None):
        outcomes[record.model] = _outcome(given.score, record.cost_micro_usd, served_response)
    elif grade is not None:
        outcomes[record.model] = _outcome(
            grade.served.score, record.cost_micro_usd, served_response
        )
    if grade is not None and grade.shadow.model != record.model:
        shadow = grade.shadow
        outcomes[shadow.model] = _outcome(shadow.score, shadow.cost_micro_usd, shadow.response)
    return outcomes


def build_outcomes(
    entries: Iterable[LogEntry],
    *,
    test_share: float = 0.0,
    served_score: ServedScore = "judge",
) -> tuple[list[dict[str, Any]], ExportSummary]:
    """The outcome rows `entries` support, oldest call first, and what could not be used."""
    summary = ExportSummary()
    joined = _join(entries, summary)
    calls = joined.calls
    summary.calls = len(calls)
    summary.unmatched = len(joined.feedback.keys() - calls.keys()) + len(
        joined.grades.keys() - calls.keys()
    )
    rows = []
    for key, record in sorted(calls.items(), key=lambda item: item[1].started_at):
        decision = record.decision
        if decision is None or record.status != CallStatus.OK or not record.model:
            summary.unanswered += 1
            continue
        if record.prompt is None:
            summary.no_prompt[record.app] += 1
            continue
        if record.served_from_cache:
            # A replayed answer says nothing new about the model and cost nothing.
            summary.from_cache += 1
            continue
        outcomes = _outcomes(record, joined.feedback.get(key), joined.grades.get(key), served_score)
        if not outcomes:
            summary.no_outcome += 1
            continue
        row_id = f"{record.app}/{record.request_id}"
        rows.append(
            {
                "id": row_id,
                "source": SOURCE_PREFIX + record.app,
                "split": _split(record.prompt, test_share),
                "task": decision.task,
                "messages": [{"role": role, "content": content} for role, content in record.prompt],
                "outcomes": outcomes,
            }
        )
        summary.both_arms += len(outcomes) > 1
    summary.rows = len(rows)
    return rows, summary
