"""Domain objects to protobuf messages, for the servicers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from router_service._proto import router_pb2 as pb
from router_service.config import Tier
from router_service.cost import Usage, micro_to_usd
from router_service.fallback import AttemptOutcome, AttemptRecord
from router_service.pipeline import CallSummary, Plan
from router_service.providers.base import TextDelta, ToolCallDelta

__all__ = ["decision_message", "delta_events", "done_event", "tier_message", "usage_message"]

_TIERS = {Tier.CHEAP: pb.TIER_CHEAP, Tier.FRONTIER: pb.TIER_FRONTIER}
_OUTCOMES = {
    AttemptOutcome.SUCCEEDED: pb.ATTEMPT_OUTCOME_SUCCEEDED,
    AttemptOutcome.FAILED: pb.ATTEMPT_OUTCOME_FAILED,
    AttemptOutcome.SKIPPED: pb.ATTEMPT_OUTCOME_SKIPPED,
    AttemptOutcome.BROKEN: pb.ATTEMPT_OUTCOME_BROKEN,
    AttemptOutcome.CANCELLED: pb.ATTEMPT_OUTCOME_CANCELLED,
}


def tier_message(tier: Tier) -> pb.Tier.ValueType:
    return _TIERS[tier]


def decision_message(plan: Plan, request_id: str) -> pb.RouteDecision:
    d = plan.decision
    first = plan.targets[0]
    return pb.RouteDecision(
        model=d.model,
        provider=first.provider.name,
        tier=_TIERS[d.tier],
        difficulty=d.difficulty if d.difficulty is not None else 0.0,
        threshold=d.threshold if d.threshold is not None else 0.0,
        reasons=d.reasons,
        classifier_version=d.classifier_version,
        experiment_arm=d.arm,
        request_id=request_id,
        task=d.task,
        candidates=d.candidates,
        prefix_hash=plan.prefix_hash,
        propensity=d.propensity,
        deployment=f"{first.provider.name}/{first.model.upstream_name(first.deployment)}",
    )


def delta_events(batch: Sequence[TextDelta | ToolCallDelta]) -> Iterator[pb.RouteEvent]:
    """A batch of deltas as few messages as possible: each run of text as one, each run of
    fragments of one tool call as one."""
    i, n = 0, len(batch)
    while i < n:
        first = batch[i]
        j = i + 1
        if type(first) is TextDelta:
            while j < n and type(batch[j]) is TextDelta:
                j += 1
            text = first.text if j == i + 1 else "".join(d.text for d in batch[i:j])  # type: ignore[union-attr]
            yield pb.RouteEvent(delta=pb.Delta(text=text))
        else:
            assert type(first) is ToolCallDelta
            while j < n and type(nxt := batch[j]) is ToolCallDelta and nxt.index == first.index:
                j += 1
            run: Sequence[ToolCallDelta] = batch[i:j]  # type: ignore[assignment]
            yield pb.RouteEvent(
                delta=pb.Delta(
                    tool_call=pb.ToolCallDelta(
                        index=first.index,
                        id=next((d.id for d in run if d.id), ""),
                        name=next((d.name for d in run if d.name), ""),
                        arguments_fragment="".join(d.arguments_fragment for d in run),
                    )
                )
            )
        i = j


def usage_message(usage: Usage) -> pb.Usage:
    return pb.Usage(
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
    )


def _attempt(attempt: AttemptRecord) -> pb.Attempt:
    return pb.Attempt(
        model=attempt.model,
        provider=attempt.provider,
        outcome=_OUTCOMES[attempt.outcome],
        error=attempt.error,
        latency_ms=attempt.latency_ms,
    )


def done_event(summary: CallSummary, request_id: str) -> pb.RouteEvent:
    return pb.RouteEvent(
        done=pb.RouteSummary(
            finish_reason=summary.finish_reason,
            usage=usage_message(summary.usage),
            cost_usd=micro_to_usd(summary.cost_micro_usd),
            cost_micro_usd=summary.cost_micro_usd,
            ttft_ms=summary.ttft_ms or 0.0,
            latency_ms=summary.latency_ms,
            served_from_cache=summary.served_from_cache,
            attempts=[_attempt(a) for a in summary.attempts],
            request_id=request_id,
            model=summary.model,
        )
    )
