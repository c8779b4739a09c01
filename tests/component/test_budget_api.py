"""Budgets, rate limits, the response cache, cache affinity and statistics over real gRPC."""

from __future__ import annotations

import asyncio
import hashlib
import math

import grpc
import pytest
from grpc import aio

from router_service._proto import router_pb2 as pb
from tests.support.configs import ADMIN_KEY, DEMO_KEY, fast_config
from tests.support.quota import quota_violations
from tests.support.servers import Running, auth, running_router

ADMIN = auth(ADMIN_KEY)


def route_request(**changes: object) -> pb.RouteRequest:
    values: dict[str, object] = {
        "task": "summarization",
        "messages": [
            pb.Message(role="system", content="You summarize reports."),
            pb.Message(role="user", content="Summarize the quarterly report in three bullets."),
        ],
        "max_output_tokens": 60,
    }
    values.update(changes)
    return pb.RouteRequest(**values)  # type: ignore[arg-type]


async def route(running: Running, request: pb.RouteRequest) -> list[pb.RouteEvent]:
    return [e async for e in running.router.Route(request, metadata=auth(DEMO_KEY))]


async def budget(running: Running) -> pb.GetBudgetResponse:
    assert running.server.accounting is not None
    await running.server.accounting.drain()
    return await running.admin.GetBudget(pb.GetBudgetRequest(app_id="demo"), metadata=ADMIN)


async def set_budget(running: Running, limit: float, soft: float = 0.0) -> pb.GetBudgetResponse:
    response = await running.admin.SetBudget(
        pb.SetBudgetRequest(app_id="demo", monthly_limit_usd=limit, soft_threshold=soft),
        metadata=ADMIN,
    )
    return response.budget


async def test_configured_budget_is_shown_and_admin_can_change_it(router: Running) -> None:
    shown = await budget(router)
    assert shown.app_id == "demo" and shown.has_limit
    assert shown.monthly_limit_usd == 50 and shown.soft_threshold == 0.8
    assert shown.spent_usd == 0 and shown.reserved_usd == 0 and shown.state == "ok"
    assert len(shown.period) == 7 and shown.period[4] == "-"
    changed = await set_budget(router, 12.5, 0.5)
    assert changed.monthly_limit_usd == 12.5 and changed.soft_threshold == 0.5
    assert (await budget(router)).monthly_limit_usd == 12.5


async def test_a_limit_set_by_admin_can_be_cleared_back_to_the_configured_one(
    router: Running,
) -> None:
    blocked = await set_budget(router, 0)
    assert blocked.state == "exhausted"
    cleared = await router.admin.SetBudget(
        pb.SetBudgetRequest(app_id="demo", clear=True), metadata=ADMIN
    )
    assert cleared.budget.monthly_limit_usd == 50 and cleared.budget.soft_threshold == 0.8
    assert cleared.budget.state == "ok"
    events = await route(router, route_request())
    assert events[-1].HasField("done")
    with pytest.raises(aio.AioRpcError) as caught:
        await router.admin.SetBudget(
            pb.SetBudgetRequest(app_id="demo", clear=True, monthly_limit_usd=5), metadata=ADMIN
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("key", "code"),
    [(DEMO_KEY, grpc.StatusCode.PERMISSION_DENIED), ("nope", grpc.StatusCode.UNAUTHENTICATED)],
)
async def test_budget_rpcs_need_an_admin_key(
    router: Running, key: str, code: grpc.StatusCode
) -> None:
    for call in (
        router.admin.GetBudget(pb.GetBudgetRequest(app_id="demo"), metadata=auth(key)),
        router.admin.SetBudget(
            pb.SetBudgetRequest(app_id="demo", monthly_limit_usd=1e6), metadata=auth(key)
        ),
        router.admin.GetStats(pb.GetStatsRequest(), metadata=auth(key)),
    ):
        with pytest.raises(aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == code
    assert (await budget(router)).monthly_limit_usd == 50


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (pb.SetBudgetRequest(app_id="demo", monthly_limit_usd=-1), "INVALID_ARGUMENT", "between 0"),
        (pb.SetBudgetRequest(app_id="demo", monthly_limit_usd=math.nan), "INVALID_ARGUMENT", "nan"),
        (
            pb.SetBudgetRequest(app_id="demo", monthly_limit_usd=5, soft_threshold=1.5),
            "INVALID_ARGUMENT",
            "soft_threshold is 1.5",
        ),
        (pb.SetBudgetRequest(app_id="", monthly_limit_usd=5), "INVALID_ARGUMENT", "app_id"),
        (pb.SetBudgetRequest(app_id="ghost", monthly_limit_usd=5), "NOT_FOUND", "'ghost'"),
    ],
)
async def test_bad_budget_requests_are_refused(
    router: Running, request_: pb.SetBudgetRequest, code: str, message: str
) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await router.admin.SetBudget(request_, metadata=ADMIN)
    assert caught.value.code().name == code
    assert message in (caught.value.details() or "")


async def test_a_routed_call_settles_its_actual_cost(router: Running) -> None:
    done = (await route(router, route_request()))[-1].done
    shown = await budget(router)
    assert done.cost_micro_usd > 0
    assert round(shown.spent_usd * 1e6) == done.cost_micro_usd
    assert shown.reserved_usd == 0


async def test_hard_cutoff_refuses_with_quota_failure_and_charges_nothing(
    router: Running,
) -> None:
    await route(router, route_request())
    spent = (await budget(router)).spent_usd
    await set_budget(router, spent + 0.00001)
    with pytest.raises(aio.AioRpcError) as caught:
        await route(router, route_request())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "has reached its" in (caught.value.details() or "")
    [violation] = quota_violations(caught.value.trailing_metadata())
    assert violation.subject == "app:demo" and "monthly budget" in violation.description
    after = await budget(router)
    assert after.spent_usd == spent and after.reserved_usd == 0


async def test_explain_shows_the_budget_state_without_reserving(router: Running) -> None:
    await route(router, route_request())
    spent = (await budget(router)).spent_usd
    await set_budget(router, spent * 1.05, soft=0.5)
    review = route_request(task="code_review")
    explained = await router.router.Explain(review, metadata=auth(DEMO_KEY))
    assert explained.tier == pb.TIER_CHEAP
    assert "budget past its soft threshold: downgraded to cheap" in explained.reasons
    assert any("will be refused" in r for r in explained.reasons)
    required = route_request(
        task="code_review", hints=pb.RouteHints(tier=pb.TIER_PREFERENCE_FRONTIER)
    )
    assert (await router.router.Explain(required, metadata=auth(DEMO_KEY))).tier == pb.TIER_FRONTIER
    assert (await budget(router)).reserved_usd == 0


async def test_past_the_soft_threshold_calls_downgrade_and_still_run(router: Running) -> None:
    await route(router, route_request())
    spent = (await budget(router)).spent_usd
    await set_budget(router, spent * 100, soft=0.005)
    events = await route(router, route_request(task="code_review"))
    assert events[0].decision.tier == pb.TIER_CHEAP and events[-1].HasField("done")
    assert (await budget(router)).state == "soft"


async def test_a_cancelled_stream_settles_what_it_produced() -> None:
    slow = {"ttft_ms": 0, "tokens_per_second": 400, "answer_tokens": 2000}
    config = fast_config(providers={"sim-openai": slow})
    async with running_router(config) as running:
        call = running.router.Route(route_request(max_output_tokens=2000), metadata=auth(DEMO_KEY))
        received = 0
        async for event in call:
            received += event.HasField("delta")
            if received == 20:
                break
        call.cancel()
        await asyncio.sleep(0.05)
        shown = await budget(running)
        assert shown.reserved_usd == 0
        # Billed for what was produced: a few dozen output tokens, far below the hold.
        assert 0 < shown.spent_usd < 0.0005


async def test_rate_limit_refuses_with_quota_failure() -> None:
    config = fast_config(apps={"demo": {"rate_limits": {"requests_per_minute": 2}}})
    async with running_router(config) as running:
        await route(running, route_request())
        await route(running, route_request())
        with pytest.raises(aio.AioRpcError) as caught:
            await route(running, route_request())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        [violation] = quota_violations(caught.value.trailing_metadata())
        assert violation.description == "requests per minute: 2"
        # The rate limit and the budget hold are taken together or not at all: the refused
        # call holds nothing and nothing is charged for it.
        for _ in range(100):
            budget = await running.admin.GetBudget(
                pb.GetBudgetRequest(app_id="demo"), metadata=ADMIN
            )
            if budget.reserved_usd == 0:
                break
            await asyncio.sleep(0.01)
        assert budget.reserved_usd == 0
        stats = await running.admin.GetStats(pb.GetStatsRequest(app_id="demo"), metadata=ADMIN)
        assert round(stats.apps[0].budget.spent_usd * 1e6) > 0


async def test_response_cache_serves_repeats_for_nothing(router: Running) -> None:
    request = route_request(temperature=0.0)
    first = await route(router, request)
    second = await route(router, request)
    assert not first[-1].done.served_from_cache
    done = second[-1].done
    assert done.served_from_cache and done.cost_micro_usd == 0
    assert done.model == first[-1].done.model
    text = ["".join(e.delta.text for e in events[1:-1]) for events in (first, second)]
    assert text[0] == text[1] and text[0]
    # Sampling requests are never served from the cache.
    sampled = await route(router, route_request(temperature=0.7))
    assert not sampled[-1].done.served_from_cache
    stats = await router.admin.GetStats(pb.GetStatsRequest(app_id="demo"), metadata=ADMIN)
    [demo] = stats.apps
    assert demo.requests == 3 and demo.response_cache_hit_rate == pytest.approx(1 / 3)
    assert round(demo.budget.spent_usd * 1e6) == sum(
        events[-1].done.cost_micro_usd for events in (first, second, sampled)
    )
    assert stats.overall.requests == 3 and not stats.overall.HasField("budget")


async def test_stats_overall_are_every_apps_calls_together() -> None:
    other_key = "other-app-key"
    other = {"key_sha256": hashlib.sha256(other_key.encode()).hexdigest(), "response_cache": True}
    async with running_router(fast_config(apps={"other": other})) as running:
        request = route_request(temperature=0.0)
        await route(running, request)  # demo: no response cache
        for _ in range(3):  # other: one answer, then two cache hits
            events = [e async for e in running.router.Route(request, metadata=auth(other_key))]
        assert events[-1].done.served_from_cache
        stats = await running.admin.GetStats(pb.GetStatsRequest(), metadata=ADMIN)
    by_app = {a.app_id: a for a in stats.apps}
    assert by_app["demo"].requests == 1 and by_app["other"].requests == 3
    overall = stats.overall
    assert overall.app_id == "" and overall.requests == 4
    assert overall.response_cache_hit_rate == pytest.approx(2 / 4)
    assert overall.spent_usd == pytest.approx(sum(a.spent_usd for a in stats.apps))
    # The two response-cache hits are in neither routing mix: no model was called for them.
    assert dict(overall.requests_by_tier) == {"cheap": 2}
    assert dict(overall.requests_by_model) == {"glm-5.2": 2}


async def test_stats_show_refused_and_invalid_calls_apart_per_app_and_overall() -> None:
    other_key = "other-app-key"
    other = {"key_sha256": hashlib.sha256(other_key.encode()).hexdigest()}
    async with running_router(fast_config(apps={"other": other})) as running:
        await route(running, route_request())
        with pytest.raises(aio.AioRpcError) as caught:
            await route(running, route_request(task=""))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await running.admin.SetBudget(
            pb.SetBudgetRequest(app_id="other", monthly_limit_usd=0), metadata=ADMIN
        )
        for _ in range(2):
            with pytest.raises(aio.AioRpcError) as caught:
                [e async for e in running.router.Route(route_request(), metadata=auth(other_key))]
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        stats = await running.admin.GetStats(pb.GetStatsRequest(), metadata=ADMIN)
    by_app = {a.app_id: (a.requests, a.refused, a.invalid) for a in stats.apps}
    assert by_app == {"demo": (1, 0, 1), "other": (0, 2, 0)}
    overall = stats.overall
    assert (overall.requests, overall.refused, overall.invalid) == (1, 2, 1)


async def test_past_the_hard_cutoff_even_a_cached_answer_is_refused(router: Running) -> None:
    request = route_request(temperature=0.0)
    first = await route(router, request)
    assert (await route(router, request))[-1].done.served_from_cache
    await set_budget(router, round(first[-1].done.cost_usd, 6))  # the first call spent it all
    with pytest.raises(aio.AioRpcError) as caught:
        await route(router, request)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    [violation] = quota_violations(caught.value.trailing_metadata())
    assert violation.subject == "app:demo"
    # A limit raised again serves the cached answer at once.
    await set_budget(router, 50)
    assert (await route(router, request))[-1].done.served_from_cache
    assert (await budget(router)).reserved_usd == 0


LONG_SYSTEM = "\n".join(
    f"Rule {i}: answer support questions politely and cite the relevant policy section."
    for i in range(80)
)
TOOLS = [
    pb.Tool(
        name="lookup_order",
        description="Find an order.",
        parameters_json='{"type":"object","properties":{"id":{"type":"string"}}}',
    ),
    pb.Tool(
        name="refund",
        description="Refund an order.",
        parameters_json='{"properties":{"amount":{"type":"number"}},"type":"object"}',
    ),
]


async def test_same_prefix_goes_to_the_same_warm_deployment() -> None:
    sims = {
        f"sim-{i}": {"kind": "simulated", "ttft_ms": 0, "tokens_per_second": 100_000}
        for i in range(3)
    }
    deployments = [{"provider": name} for name in sims]
    config = fast_config(
        providers=sims,
        models={"glm-5.2": {"provider": None, "deployments": deployments}},
    )
    async with running_router(config) as running:
        chosen = set()
        cached = []
        for i in range(6):
            # Logically the same prefix, serialized differently every time.
            system = LONG_SYSTEM.replace("\n", "  \n" if i % 2 else "\r\n")
            tools = TOOLS if i % 3 else TOOLS[::-1]
            request = route_request(
                task="support_draft",
                tools=tools,
                messages=[
                    pb.Message(role="system", content=system),
                    pb.Message(role="user", content=f"Question number {i} about my order."),
                ],
            )
            events = await route(running, request)
            chosen.add(events[0].decision.deployment)
            cached.append(events[-1].done.usage.cached_input_tokens)
        assert len(chosen) == 1
        assert cached[0] == 0 and all(c > 1000 for c in cached[1:])
        stats = await running.admin.GetStats(pb.GetStatsRequest(), metadata=ADMIN)
        [demo] = stats.apps
        assert demo.prompt_cache_hit_rate == pytest.approx(5 / 6)
        assert demo.cached_input_token_share > 0.5
        assert demo.requests_by_model == {"glm-5.2": 6}


async def test_requests_refused_for_budget_give_their_rate_allowance_back() -> None:
    config = fast_config(apps={"demo": {"rate_limits": {"requests_per_minute": 3}}})
    async with running_router(config) as running:
        await route(running, route_request())
        await set_budget(running, (await budget(running)).spent_usd + 0.000001)
        for _ in range(5):  # more than the rate limit allows: none of them went anywhere
            with pytest.raises(aio.AioRpcError) as caught:
                await route(running, route_request())
            [violation] = quota_violations(caught.value.trailing_metadata())
            assert "monthly budget" in violation.description
        await asyncio.sleep(0.05)  # the refunds run in the background
        await set_budget(running, 100)
        # Two requests of the three a minute are left.
        await route(running, route_request())
        await route(running, route_request())
        with pytest.raises(aio.AioRpcError) as caught:
            await route(running, route_request())
        [violation] = quota_violations(caught.value.trailing_metadata())
        assert violation.description == "requests per minute: 3"
