"""Runs shadow grading in the background: the other tier's answer, then the judge's verdict.

A call is sampled when it starts (`wants`): only for apps that opted in to training data (their
prompts may become training data; other apps' prompts go only to the model that serves them),
only when the caller left the routing to the router (no forced model or tier, no money
movement), at the task's `shadow_rate`. When the sampled call has finished successfully, its
answer is handed to `submit`, which starts a background task unless `max_in_flight` are already
running (then the call is skipped, and counted). The task routes the same conversation to the
other tier and asks the judge model to grade both answers, all through the pipeline under the
app `<app>:shadow`, so shadow spend is recorded, and budgeted, apart from the app's own. The
grades go to the call log. Nothing here can delay or fail the caller's stream: it has ended
before the task starts. `aclose` cancels whatever is still running at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import aclosing
from dataclasses import replace
from decimal import Decimal

from router_service.auth import App
from router_service.calllog.entries import Grade, GradedAnswer
from router_service.calllog.writer import CallLog
from router_service.chat import Hints, TierPreference
from router_service.config import Tier
from router_service.errors import RouterError
from router_service.exploration import Exploration
from router_service.pipeline import CallSummary, Pipeline, Plan
from router_service.providers.base import TextDelta
from router_service.records import CallRecord
from router_service.shadow import shadow_app
from router_service.shadow.judge import JudgeError, judge_request, parse_verdict, served_is_a
from router_service.telemetry import attributes as a
from router_service.telemetry.tracing import CallTrace, Tracing

__all__ = ["SHADOW_OF", "ShadowRunner"]

log = logging.getLogger(__name__)

# Metadata on shadow calls naming the request they shadow.
SHADOW_OF = "llm_router.shadow_of"

_OTHER_TIER = {Tier.CHEAP: Tier.FRONTIER, Tier.FRONTIER: Tier.CHEAP}
_PREFERENCE = {Tier.CHEAP: TierPreference.CHEAP, Tier.FRONTIER: TierPreference.FRONTIER}

# Outcomes of sampled calls (the keys of `ShadowRunner.counts`).
GRADED = "graded"
FAILED = "failed"
UNPARSEABLE = "unparseable"
SKIPPED_BUSY = "skipped_busy"
NO_OTHER_TIER = "no_other_tier"
CANCELLED = "cancelled"


class ShadowRunner:
    def __init__(
        self,
        *,
        exploration: Exploration,
        judge_model: str,
        judge_reasons: bool = False,
        call_log: CallLog | None,
        tracing: Tracing,
        max_in_flight: int,
        budget_share: Decimal = Decimal("0.1"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._exploration = exploration
        self._judge_model = judge_model
        # Whether the judge is a reasoning model (it then gets room to think).
        self._judge_reasons = judge_reasons
        self._log = call_log
        self._tracing = tracing
        self._max_in_flight = max_in_flight
        self._budget_share = budget_share
        self._clock = clock
        self._pipeline: Pipeline | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._shadow_apps: dict[str, App] = {}
        self._counts = dict.fromkeys(
            (GRADED, FAILED, UNPARSEABLE, SKIPPED_BUSY, NO_OTHER_TIER, CANCELLED), 0
        )

    def bind(self, pipeline: Pipeline) -> None:
        """The pipeline shadow calls go through (it holds this runner, hence the late bind)."""
        self._pipeline = pipeline

    @property
    def counts(self) -> Mapping[str, int]:
        """Sampled calls so far, by what became of them."""
        return dict(self._counts)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def wants(self, app: App, plan: Plan) -> bool:
        if not app.config.training_data_opt_in:
            return False
        hints = plan.request.hints
        if hints.force_model or hints.money_movement or hints.tier is not TierPreference.AUTO:
            return False
        rate = self._exploration.shadow_rate(app.tasks[plan.decision.task])
        return rate > 0 and self._exploration.draw() < rate

    def submit(
        self, app: App, plan: Plan, record: CallRecord, answer: str, trace: CallTrace
    ) -> None:
        if len(self._tasks) >= self._max_in_flight:
            self._counts[SKIPPED_BUSY] += 1
            return
        task = asyncio.get_running_loop().create_task(
            self._grade(app, plan, record, answer, trace), name=f"shadow {record.request_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _shadow_app(self, app: App) -> App:
        shadow = self._shadow_apps.get(app.name)
        if shadow is None:
            shadow = self._shadow_apps[app.name] = shadow_app(app, self._budget_share)
        return shadow

    async def _grade(
        self, app: App, plan: Plan, record: CallRecord, answer: str, follows: CallTrace
    ) -> None:
        request_id = record.request_id
        trace = self._tracing.start_background(
            a.SPAN_SHADOW, follows, {a.SHADOW_OF: request_id, a.APP: app.name}
        )
        outcome = FAILED
        try:
            outcome = await self._shadow_and_judge(app, plan, record, answer, trace)
        except JudgeError as exc:
            outcome = UNPARSEABLE
            log.warning("shadow %s: the judge's reply is not a verdict: %s", request_id, exc)
        except RouterError as exc:
            log.info("shadow %s failed: %s", request_id, exc.message)
        except asyncio.CancelledError:
            outcome = CANCELLED
            raise
        finally:
            self._counts[outcome] += 1
            trace.set(a.SHADOW_OUTCOME, outcome)
            trace.end()

    async def _shadow_and_judge(
        self, app: App, plan: Plan, record: CallRecord, answer: str, trace: CallTrace
    ) -> str:
        shadow_app = self._shadow_app(app)
        request = plan.request
        other = _OTHER_TIER[plan.decision.tier]
        shadow_request = replace(
            request,
            request_id=f"{request.request_id}.shadow",
            hints=Hints(tier=_PREFERENCE[other]),
            metadata={SHADOW_OF: request.request_id},
        )
        pipeline = self._require_pipeline()
        shadow_plan = await pipeline.plan(shadow_app, shadow_request)
        if shadow_plan.decision.tier is not other:
            return NO_OTHER_TIER
        shadow_answer, shadow_summary = await self._answer(
            shadow_app, shadow_plan, trace.child_call("shadow.answer")
        )
        # The judge is not told which answer is whose; the request id decides the order.
        served_first = served_is_a(request.request_id)
        first, second = (answer, shadow_answer) if served_first else (shadow_answer, answer)
        judging = judge_request(
            f"{request.request_id}.judge",
            request.messages,
            first,
            second,
            judge_model=self._judge_model,
            reasoning=self._judge_reasons,
        )
        judging = replace(judging, metadata={SHADOW_OF: request.request_id})
        reply, _ = await self._answer(
            shadow_app, await pipeline.plan(shadow_app, judging), trace.child_call("shadow.judge")
        )
        verdict = parse_verdict(reply)
        served_score, shadow_score = (
            (verdict.a, verdict.b) if served_first else (verdict.b, verdict.a)
        )
        grade = Grade(
            request_id=request.request_id,
            app=app.name,
            task=plan.decision.task,
            at=self._clock(),
            judge=self._judge_model,
            served=GradedAnswer(record.model, served_score, record.cost_micro_usd, answer),
            shadow=GradedAnswer(
                shadow_summary.model,
                shadow_score,
                shadow_summary.cost_micro_usd,
                shadow_answer,
            ),
        )
        if self._log is not None:
            self._log.submit(grade)
        return GRADED

    def _require_pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError("ShadowRunner.bind(pipeline) was not called")
        return self._pipeline

    async def _answer(self, app: App, plan: Plan, trace: CallTrace) -> tuple[str, CallSummary]:
        """Route `plan` to the end and return its text; `trace` is ended."""
        parts: list[str] = []
        try:
            call = await self._require_pipeline().start(app, plan, trace=trace)
            async with aclosing(call.stream()) as batches:
                async for batch in batches:
                    parts += (event.text for event in batch if type(event) is TextDelta)
        finally:
            trace.end()
        assert call.summary is not None
        return "".join(parts), call.summary

    async def aclose(self) -> None:
        """Cancel the shadow calls still running (shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
