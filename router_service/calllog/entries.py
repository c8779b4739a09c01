"""What the call log holds besides cost records: feedback and judge grades.

The log is one ordered sequence of entries of three kinds: a `CallRecord` per call (the cost
record, `records.py`), a `Feedback` per `Feedback` RPC, and a `Grade` per shadow-graded call.
`llm-router export` joins them by app and request id.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_service.records import CallRecord

__all__ = ["Feedback", "Grade", "GradedAnswer", "LogEntry"]


@dataclass(frozen=True, slots=True)
class Feedback:
    """An app's quality outcome for one of its earlier requests."""

    request_id: str
    app: str
    # Unix time the feedback arrived.
    at: float
    # Quality in [0, 1].
    score: float
    label: str = ""
    comment: str = ""


@dataclass(frozen=True, slots=True)
class GradedAnswer:
    model: str
    # The judge's grade in [0, 1].
    score: float
    cost_micro_usd: int
    # The answer's text (grades exist only for apps that opted in to training data).
    response: str | None


@dataclass(frozen=True, slots=True)
class Grade:
    """A judge model's grades of a call's answer and of the other tier's shadow answer."""

    request_id: str
    app: str
    task: str
    at: float
    judge: str
    served: GradedAnswer
    shadow: GradedAnswer


LogEntry = CallRecord | Feedback | Grade
