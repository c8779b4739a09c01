"""Shadow grading: the other tier answers a sampled call in the background and a judge model
grades both answers, so outcome data exists for both arms without touching the caller.

`shadow.judge` builds the judge's prompt and parses its verdict (pure); `shadow.runner` runs
the background calls.
"""

from __future__ import annotations

from decimal import Decimal

from router_service.auth import App
from router_service.config import BudgetConfig

__all__ = ["SHADOW_SUFFIX", "shadow_app"]

# Shadow and judge calls are made, recorded and budgeted as the app `<app>:shadow`.
SHADOW_SUFFIX = ":shadow"


def shadow_app(app: App, budget_share: Decimal) -> App:
    """`<app>:shadow`: the app's task classes without exploration or shadowing of their own, no
    prompt text in its records (the grade keeps both answers), no response cache, and a budget
    of `budget_share` of the app's own."""
    budget = app.config.budget
    if budget is not None:
        budget = BudgetConfig(
            monthly_limit_usd=budget.monthly_limit_usd * budget_share,
            soft_threshold=budget.soft_threshold,
        )
    return App(
        name=app.name + SHADOW_SUFFIX,
        config=app.config.model_copy(
            update={"training_data_opt_in": False, "response_cache": False, "budget": budget}
        ),
        tasks={
            name: task.model_copy(update={"exploration_rate": 0.0, "shadow_rate": 0.0})
            for name, task in app.tasks.items()
        },
    )
