"""Per-app statistics: what each call counts for, and the rates derived from the counts."""

from __future__ import annotations

from dataclasses import replace

from router_service.config import Tier
from router_service.cost import Usage
from router_service.policy import Decision
from router_service.records import CallRecord, CallStatus, invalid_call
from router_service.stats import AppStats, StatsRecorder, counts_of
from router_service.store import MemoryStore

DECISION = Decision(
    task="summarization",
    tier=Tier.CHEAP,
    model="glm-5.2",
    candidates=("glm-5.2",),
    difficulty=None,
    threshold=None,
    classifier_version="",
    reasons=(),
    max_output_tokens=100,
)
CALL = CallRecord(
    request_id="r",
    started_at=1_795_000_000.0,
    app="a",
    decision=DECISION,
    usage=Usage(input_tokens=2000, cached_input_tokens=1500, output_tokens=50),
    cost_micro_usd=900,
    ttft_ms=10.0,
    latency_ms=20.0,
    served_from_cache=False,
    attempts=(),
    status=CallStatus.OK,
    error="",
    model="glm-5.2",
    provider="sim-openai",
    finish_reason="stop",
    prompt=None,
    metadata={},
)


def test_rates_follow_the_spec_definitions() -> None:
    cold = replace(CALL, usage=Usage(input_tokens=2000, output_tokens=50), cost_micro_usd=1900)
    cached = replace(CALL, usage=Usage(), cost_micro_usd=0, served_from_cache=True)
    refused = replace(CALL, status=CallStatus.REFUSED, usage=Usage(), cost_micro_usd=0, model="")
    counts = counts_of(CALL) + counts_of(cold) + counts_of(cached) + counts_of(refused)
    stats = AppStats.from_counts("a", "2026-11", counts)
    assert stats.requests == 3 and stats.refused == 1
    assert stats.prompt_cache_hit_rate == 0.5  # one of two provider calls had cached input
    assert stats.cached_input_token_share == 1500 / 4000
    assert stats.response_cache_hit_rate == 1 / 3
    assert stats.spent_micro_usd == 2800
    # The routing mix: the two calls sent to a model, not the response-cache hit.
    assert stats.requests_by_tier == {"cheap": 2}
    assert stats.requests_by_model == {"glm-5.2": 2}
    assert stats.spent_micro_usd_by_task == {"summarization": 2800}


def test_requests_refused_as_invalid_count_apart_from_routed_calls() -> None:
    invalid = invalid_call("a", "bad-1", "3 tools; the limit is 2")
    stats = AppStats.from_counts("a", "2026-11", counts_of(invalid) + counts_of(CALL))
    assert (stats.requests, stats.refused, stats.invalid) == (1, 0, 1)
    assert stats.requests_by_tier == {"cheap": 1} and stats.spent_micro_usd == 900


def test_no_calls_give_zero_rates() -> None:
    stats = AppStats.from_counts("a", "2026-11", {})
    assert stats.prompt_cache_hit_rate == stats.response_cache_hit_rate == 0.0


async def test_recorded_calls_reach_the_store() -> None:
    store = MemoryStore()
    recorder = StatsRecorder(store, flush_interval_s=60, clock=lambda: CALL.started_at)
    for _ in range(3):
        recorder.observe(CALL)
    stats = await recorder.read("a")
    assert stats.requests == 3 and stats.spent_micro_usd == 2700
    await recorder.aclose()
