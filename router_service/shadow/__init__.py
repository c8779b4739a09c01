"""Shadow grading: the other tier answers a sampled call in the background and a judge model
grades both answers, so outcome data exists for both arms without touching the caller.

`shadow.judge` builds the judge's prompt and parses its verdict (pure); `shadow.runner` runs
the background calls.
"""

from __future__ import annotations

__all__ = ["SHADOW_SUFFIX"]

# Shadow and judge calls are made, recorded and budgeted as the app `<app>:shadow`.
SHADOW_SUFFIX = ":shadow"
