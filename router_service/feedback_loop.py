"""The parts that close the loop, built together: call log, feedback, exploration, shadow
grading and the metrics observer.

The composition root (`server.RouterServer`) builds one `FeedbackLoop`, hands its observers,
exploration and shadow runner to the pipeline, its recorder to the Feedback RPC, and closes it
after the gRPC server has drained: shadow calls are cancelled first (they write to the log),
then the call log writes what is queued.
"""

from __future__ import annotations

from router_service import alerts
from router_service.calllog import CallLog, FeedbackRecorder, build_call_log
from router_service.catalog import REASONING
from router_service.config import RouterConfig
from router_service.exploration import Exploration
from router_service.pipeline import Pipeline
from router_service.records import CallObserver
from router_service.shadow.runner import ShadowRunner
from router_service.store.redis import RedisClient
from router_service.telemetry import Telemetry
from router_service.telemetry.attributes import ALERT_EVENT, CALLLOG_DROP_REASON, SHADOW_OUTCOME
from router_service.telemetry.metrics import ALERTS, CALLLOG_DROPPED, SHADOW_CALLS

__all__ = ["FeedbackLoop"]


class FeedbackLoop:
    def __init__(
        self, config: RouterConfig, redis: RedisClient | None, telemetry: Telemetry
    ) -> None:
        self.call_log: CallLog | None = None
        self.feedback: FeedbackRecorder | None = None
        self.shadow: ShadowRunner | None = None
        self.exploration = Exploration(config.exploration)
        observers: list[CallObserver] = []
        if config.call_log.enabled:
            self.call_log = build_call_log(
                config.call_log, redis, key_prefix=config.store.key_prefix
            )
            self.feedback = FeedbackRecorder(self.call_log)
            observers.append(self.call_log)
        judge = config.exploration.judge_model
        if judge is not None:
            self.shadow = ShadowRunner(
                exploration=self.exploration,
                judge_model=judge,
                judge_reasons=REASONING in config.models[judge].capabilities,
                call_log=self.call_log,
                tracing=telemetry.tracing,
                max_in_flight=config.exploration.max_shadow_in_flight,
                budget_share=config.exploration.shadow_budget_share,
            )
        metrics = telemetry.metrics
        if metrics is not None:
            observers.append(metrics)
            call_log, shadow = self.call_log, self.shadow
            if call_log is not None:
                metrics.watch_counts(
                    CALLLOG_DROPPED,
                    "{entry}",
                    "Call-log entries dropped: queue full, sink down, shutdown, or past an app's "
                    "allowance of invalid requests",
                    CALLLOG_DROP_REASON,
                    lambda: call_log.dropped,
                )
            metrics.watch_counts(
                ALERTS,
                "{event}",
                "Operator alerts: store unavailable (by what happened instead), store refused "
                "or recovered, lost leases, settle failures, shortfalls, soft thresholds",
                ALERT_EVENT,
                lambda: alerts.COUNTS,
            )
            if shadow is not None:
                metrics.watch_counts(
                    SHADOW_CALLS,
                    "{call}",
                    "Shadow-sampled calls by outcome",
                    SHADOW_OUTCOME,
                    lambda: shadow.counts,
                )
        self.observers: tuple[CallObserver, ...] = tuple(observers)

    def start(self, pipeline: Pipeline) -> None:
        """Start the background writer and give the shadow runner its pipeline."""
        if self.call_log is not None:
            self.call_log.start()
        if self.shadow is not None:
            self.shadow.bind(pipeline)

    async def aclose(self) -> None:
        if self.shadow is not None:
            await self.shadow.aclose()
        if self.call_log is not None:
            await self.call_log.aclose()
