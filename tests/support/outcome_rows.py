"""A row of the outcome dataset (SPEC.md, "Outcome dataset") exactly as the service writes it."""

from __future__ import annotations

from typing import Any

OUTCOME_ROW: dict[str, Any] = {
    "id": "q1",
    "source": "test",
    "split": "train",
    "task": None,
    "messages": [{"role": "user", "content": "What is 1 + 1?"}],
    "outcomes": {
        "weak": {"score": 0.0, "cost_usd": None, "response": None},
        "strong": {"score": 1.0, "cost_usd": 0.5, "response": "2"},
    },
}
