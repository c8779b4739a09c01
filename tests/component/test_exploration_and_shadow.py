"""Exploration and shadow grading over real gRPC on the simulated providers."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from router_service._proto import router_pb2 as pb
from router_service.calllog.entries import Grade
from router_service.calllog.reader import LogScan
from router_service.config import RouterConfig
from router_service.records import CallRecord
from router_service.shadow.runner import SHADOW_OF, ShadowRunner
from tests.component.test_route_api import route_request
from tests.support.configs import ADMIN_KEY, DEMO_KEY, fast_config, fast_raw, merge
from tests.support.servers import Running, auth, running_router

OTHER_KEY = "other-app-key"


async def route(running: Running, key: str = DEMO_KEY, **changes: Any) -> list[pb.RouteEvent]:
    request = route_request(**changes)
    return [e async for e in running.router.Route(request, metadata=auth(key))]


async def test_exploration_sends_the_share_to_the_other_tier_with_its_propensity() -> None:
    config = fast_config(exploration={"rate": 0.3})
    arms = []
    async with running_router(config) as running:
        for _ in range(200):
            decision = (await route(running))[0].decision
            arms.append((decision.experiment_arm, decision.tier, decision.propensity))
        events = await route(running, task="code_review")
    explored = [x for x in arms if x[0] == "explore"]
    assert 20 < len(explored) < 100
    assert {x for x in explored} == {("explore", pb.TIER_FRONTIER, 0.3)}
    assert {x for x in arms if x[0] != "explore"} == {("policy", pb.TIER_CHEAP, 0.7)}
    assert events[-1].WhichOneof("event") == "done"


async def test_rates_follow_task_and_app_overrides() -> None:
    config = fast_config(
        exploration={"rate": 0.0},
        tasks={"code_review": {"exploration_rate": 1.0}},
        apps={"demo": {"tasks": {"summarization": {"exploration_rate": 1.0}}}},
    )
    async with running_router(config) as running:

        async def decided(**changes: Any) -> pb.RouteDecision:
            return (await route(running, **changes))[0].decision

        review = await decided(task="code_review")
        summary = await decided()
        extraction = await decided(task="extraction")
        forced = await decided(hints=pb.RouteHints(money_movement=True))
    assert (review.experiment_arm, review.tier) == ("explore", pb.TIER_CHEAP)
    assert any("exploration: routed to cheap (p=1)" in r for r in review.reasons)
    assert (summary.experiment_arm, summary.tier) == ("explore", pb.TIER_FRONTIER)
    assert extraction.experiment_arm == "policy" and extraction.propensity == 1.0
    # Money movement requires frontier: never explored.
    assert (forced.experiment_arm, forced.tier) == ("policy", pb.TIER_FRONTIER)


def shadow_config(directory: Path, max_in_flight: int = 8, **changes: Any) -> RouterConfig:
    other = {"key_sha256": hashlib.sha256(OTHER_KEY.encode()).hexdigest()}
    raw = merge(
        fast_raw(
            exploration={"shadow_rate": 1.0, "max_shadow_in_flight": max_in_flight},
            call_log={"enabled": True, "directory": str(directory), "flush_interval_s": 0.01},
            apps={"other": other},
        ),
        changes,
    )
    return RouterConfig.model_validate(raw)


def runner(running: Running) -> ShadowRunner:
    assert (
        running.server.feedback_loop is not None and running.server.feedback_loop.shadow is not None
    )
    return running.server.feedback_loop.shadow


async def settled(shadow: ShadowRunner) -> None:
    for _ in range(500):
        if shadow.in_flight == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("shadow calls did not finish")


async def test_a_shadowed_call_gets_both_answers_graded(tmp_path: Path) -> None:
    async with running_router(shadow_config(tmp_path)) as running:
        done = (await route(running, request_id="s-1"))[-1].done
        await settled(runner(running))
        assert runner(running).counts["graded"] == 1
    entries = list(LogScan().jsonl(tmp_path))
    (grade,) = [e for e in entries if isinstance(e, Grade)]
    assert (grade.app, grade.request_id, grade.judge) == ("demo", "s-1", "gpt-5.5")
    assert grade.served.model == "glm-5.2" and grade.served.cost_micro_usd == done.cost_micro_usd
    assert grade.shadow.model == "gpt-5.5"
    assert 0 <= grade.served.score <= 1 and 0 <= grade.shadow.score <= 1
    assert grade.served.response and grade.shadow.response
    assert grade.served.response != grade.shadow.response
    calls = {e.request_id: e for e in entries if isinstance(e, CallRecord)}
    assert set(calls) == {"s-1", "s-1.shadow", "s-1.judge"}
    for shadow_id in ("s-1.shadow", "s-1.judge"):
        record = calls[shadow_id]
        assert record.app == "demo:shadow" and record.metadata == {SHADOW_OF: "s-1"}
        assert record.prompt is None and record.cost_micro_usd > 0
    assert calls["s-1.shadow"].decision.tier.value == "frontier"
    assert calls["s-1.judge"].decision.arm == "forced"
    assert calls["s-1"].app == "demo" and calls["s-1"].cost_micro_usd == done.cost_micro_usd


async def test_only_opted_in_apps_left_to_the_router_are_shadowed(tmp_path: Path) -> None:
    async with running_router(shadow_config(tmp_path)) as running:
        await route(running, key=OTHER_KEY)
        await route(running, hints=pb.RouteHints(tier=pb.TIER_PREFERENCE_CHEAP))
        await route(running, hints=pb.RouteHints(force_model="kimi-2.7"))
        await settled(runner(running))
        assert sum(runner(running).counts.values()) == 0


async def test_response_cache_replays_are_not_shadowed(tmp_path: Path) -> None:
    async with running_router(shadow_config(tmp_path)) as running:
        first = await route(
            running, request_id="c-1", temperature=0.0, hints=pb.RouteHints(response_cache=True)
        )
        again = await route(
            running, request_id="c-2", temperature=0.0, hints=pb.RouteHints(response_cache=True)
        )
        assert again[-1].done.served_from_cache and not first[-1].done.served_from_cache
        await settled(runner(running))
        assert runner(running).counts["graded"] == 1  # the first call only
    ids = {e.request_id for e in LogScan().jsonl(tmp_path) if isinstance(e, CallRecord)}
    assert ids == {"c-1", "c-2", "c-1.shadow", "c-1.judge"}


async def test_shadow_calls_never_hold_up_the_caller_and_stop_at_shutdown(tmp_path: Path) -> None:
    # Frontier models answer slowly; the cheap answer streams at once.
    slow = {"ttft_ms": 30_000}
    config = shadow_config(
        tmp_path,
        max_in_flight=1,
        providers={"sim-anthropic": slow},
        models={"gpt-5.5": {"provider": "sim-anthropic", "deployments": None}},
    )
    async with running_router(config) as running:
        shadow = runner(running)
        first = await asyncio.wait_for(route(running, request_id="fast-1"), timeout=5)
        assert first[-1].done.finish_reason == "stop"
        assert shadow.in_flight == 1
        await asyncio.wait_for(route(running, request_id="fast-2"), timeout=5)
        assert shadow.counts["skipped_busy"] == 1
    assert shadow.in_flight == 0 and shadow.counts["cancelled"] == 1
    assert not [e for e in LogScan().jsonl(tmp_path) if isinstance(e, Grade)]


async def test_shadow_spend_goes_to_its_own_budget(tmp_path: Path) -> None:
    config = shadow_config(
        tmp_path,
        exploration={"shadow_rate": 1.0, "shadow_budget_share": "0.25"},
        apps={"demo": {"budget": {"monthly_limit_usd": 40}}},
    )
    async with running_router(config) as running:
        done = (await route(running, request_id="b-1"))[-1].done
        await settled(runner(running))

        async def budget(app_id: str) -> pb.GetBudgetResponse:
            request = pb.GetBudgetRequest(app_id=app_id)
            for _ in range(100):
                reply = await running.admin.GetBudget(request, metadata=auth(ADMIN_KEY))
                if reply.reserved_usd == 0:
                    return reply
                await asyncio.sleep(0.02)
            raise AssertionError("reservations did not settle")

        app, shadow = await budget("demo"), await budget("demo:shadow")
    assert round(app.spent_usd * 1e6) == done.cost_micro_usd
    assert app.monthly_limit_usd == 40 and shadow.monthly_limit_usd == 10
    # The shadow answer and the judge's grading, charged to the shadow budget only.
    assert shadow.spent_usd > 0


async def test_the_shadow_budget_follows_the_apps_limit_set_at_run_time(tmp_path: Path) -> None:
    config = shadow_config(
        tmp_path,
        exploration={"shadow_rate": 1.0, "shadow_budget_share": "0.25"},
        apps={"demo": {"budget": {"monthly_limit_usd": 40}}},
    )
    admin = auth(ADMIN_KEY)
    async with running_router(config) as running:

        async def limit(app_id: str) -> float:
            reply = await running.admin.GetBudget(
                pb.GetBudgetRequest(app_id=app_id), metadata=admin
            )
            return reply.monthly_limit_usd

        set_demo = pb.SetBudgetRequest(app_id="demo", monthly_limit_usd=2)
        await running.admin.SetBudget(set_demo, metadata=admin)
        assert (await limit("demo"), await limit("demo:shadow")) == (2, 0.5)
        # Its own setting wins, until the app's limit moves again.
        own = pb.SetBudgetRequest(app_id="demo:shadow", monthly_limit_usd=1)
        await running.admin.SetBudget(own, metadata=admin)
        assert await limit("demo:shadow") == 1
        clear = pb.SetBudgetRequest(app_id="demo", clear=True)
        await running.admin.SetBudget(clear, metadata=admin)
        assert (await limit("demo"), await limit("demo:shadow")) == (40, 10)
