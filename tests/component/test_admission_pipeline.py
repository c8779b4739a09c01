"""The admission sent at a request's arrival, through the real pipeline: its hold covers the
decided worst case for any request, and a call refused at the bound but fitting its own worst
case is served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_service.accounting import Accounting
from router_service.admission import Admissions
from router_service.auth import App, Authenticator
from router_service.budgets import Hold
from router_service.catalog import Catalog
from router_service.chat import ChatMessage, ChatRequest, Hints, TierPreference, ToolSpec
from router_service.config import ExplorationConfig, RouterConfig, StoreConfig
from router_service.errors import BudgetExhausted, InvalidRequest, StoreUnavailable
from router_service.exploration import Exploration
from router_service.pipeline import Pipeline
from router_service.policy import BudgetState, Classification
from router_service.providers.http import build_http_client
from router_service.providers.registry import build_providers
from router_service.records import CallRecord, CallStatus
from router_service.store import FailoverStore, MemoryStore, RateDecision
from tests.support.configs import fast_config
from tests.support.stores import any_store
from tests.support.waiting import eventually

CONFIG = fast_config()
TASKS = [*sorted(CONFIG.tasks), "unknown"]
MODELS = sorted(CONFIG.models)


class RecordingAdmissions(Admissions):
    """Admissions that remember the amount each round trip asked for."""

    amounts: list[int]

    def send(self, app: App, prompt_tokens: int, amount_micro_usd: int) -> asyncio.Task[Hold]:
        self.amounts.append(amount_micro_usd)
        return super().send(app, prompt_tokens, amount_micro_usd)


class Scores:
    """A classifier whose score the test sets."""

    score = 0.5

    def classify(self, messages: object) -> Classification:
        return Classification(self.score, "test", 0.5, {"strong_share_10": 0.4})


def recording(accounting: Accounting) -> list[int]:
    admissions = RecordingAdmissions(accounting.store, accounting.budgets, accounting.rate_limits)
    admissions.amounts = []
    accounting.admissions = admissions
    return admissions.amounts


@asynccontextmanager
async def pipeline(
    accounting: Accounting,
    *,
    config: RouterConfig = CONFIG,
    scores: Scores | None = None,
    draw: Callable[[], float] = lambda: 1.0,
    observers: list[CallRecord] | None = None,
) -> AsyncIterator[tuple[Pipeline, App]]:
    class Collect:
        def observe(self, record: CallRecord) -> None:
            if observers is not None:
                observers.append(record)

    async with build_http_client(config.providers, {}) as client:
        yield (
            Pipeline(
                catalog=Catalog(config.models),
                providers=build_providers(config.providers, client, {}),
                difficulty=scores,
                accounting=accounting,
                exploration=Exploration(ExplorationConfig(rate=0.3), draw=draw),
                observers=[Collect()],
            ),
            Authenticator(config, {}).apps[0],
        )


requests = st.builds(
    lambda task, words, tools, max_output, hints: ChatRequest(
        request_id="r",
        task=task,
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "word " * words)),
        tools=(ToolSpec("lookup", "Find it.", {"type": "object"}),) if tools else (),
        max_output_tokens=max_output,
        hints=hints,
    ),
    task=st.sampled_from(TASKS),
    words=st.integers(0, 250_000),
    tools=st.booleans(),
    max_output=st.just(0) | st.integers(1, 65_536),
    hints=st.builds(
        Hints,
        tier=st.sampled_from(TierPreference),
        force_model=st.just("") | st.sampled_from([*MODELS, "unknown"]),
        money_movement=st.booleans(),
        customer_escalation=st.booleans(),
    ),
)


@settings(max_examples=150, deadline=None)
@given(request=requests, score=st.floats(0, 1), draw=st.floats(0, 1))
async def test_the_hold_at_arrival_covers_the_decided_worst_case(
    request: ChatRequest, score: float, draw: float
) -> None:
    # No limits in the way: only the amounts are of interest here.
    accounting = Accounting(MemoryStore(), StoreConfig())
    amounts = recording(accounting)
    scores = Scores()
    scores.score = score
    config = CONFIG.model_copy(
        update={"apps": {"demo": CONFIG.apps["demo"].model_copy(update={"budget": None})}}
    )
    async with pipeline(accounting, config=config, scores=scores, draw=lambda: draw) as (p, app):
        try:
            call = await p.route(app, request)
        except InvalidRequest:
            assert amounts == []  # nothing can serve it: nothing was sent
            return
        call.release()
        [bound] = amounts  # one admission, never asked again
        assert bound >= call.plan.hold_micro_usd > 0
        await accounting.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def accounting(
    request: pytest.FixtureRequest, redis_url_fixture: str
) -> AsyncIterator[Accounting]:
    async with any_store(request.param, redis_url_fixture) as store:
        accounting = Accounting(store, StoreConfig())
        yield accounting
        await accounting.aclose()


SUMMARY = ChatRequest(
    request_id="r1",
    task="summarization",
    messages=(ChatMessage("user", "Summarize the quarterly report in three bullets."),),
    max_output_tokens=2_000,
)


async def test_refused_at_the_bound_but_fitting_its_worst_case_it_is_served(
    accounting: Accounting, caplog: pytest.LogCaptureFixture
) -> None:
    amounts = recording(accounting)
    records: list[CallRecord] = []
    async with pipeline(accounting, observers=records) as (p, app):
        # No classifier: the task's default tier (cheap) decides; the hold at arrival covers
        # frontier too, about 18 times the cheap worst case.
        exact = (await p.plan(app, SUMMARY)).hold_micro_usd
        spent = 200  # micro-USD
        limit = Decimal(spent + exact + exact // 2) / 1_000_000
        await accounting.budgets.set_limit(app.name, app.config, limit, 0.8)
        hold = await accounting.budgets.reserve(app, spent)
        await accounting.budgets.settle(hold, spent)
        amounts.clear()

        call = await p.route(app, SUMMARY)
        assert amounts[0] > exact * 10 and amounts[1:] == [exact]
        assert call.plan.decision.tier == "cheap"
        async for _ in call.stream():
            pass
        assert call.summary is not None and call.summary.cost_micro_usd > 0
        await accounting.drain()
        usage = (await accounting.budgets.read(app.name, app.config)).usage
        assert usage.spent_micro_usd == spent + call.summary.cost_micro_usd
        assert usage.reserved_micro_usd == 0

        # Refused at its own worst case too: the record says why, and nothing is held.
        limit = Decimal(usage.spent_micro_usd + exact // 2) / 1_000_000
        await accounting.budgets.set_limit(app.name, app.config, limit, 0.8)
        amounts.clear()
        with pytest.raises(BudgetExhausted):
            await p.route(app, SUMMARY)
        assert len(amounts) == 2 and amounts[1] == exact
        refused = records[-1]
        assert refused.status == CallStatus.REFUSED
        assert refused.decision.budget is BudgetState.EXHAUSTED
        assert "too little left" in refused.decision.reasons[-1]
        await accounting.admissions.drain()
        assert (await accounting.budgets.read(app.name, app.config)).usage.reserved_micro_usd == 0
    assert "below the decided worst case" not in caplog.text


class Slow(MemoryStore):
    """Prefix-warmth and response-cache reads wait for `gate`."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.refunded = 0

    async def take(self, app: str, **take: Any) -> RateDecision:
        self.refunded -= min(0, take["requests"])
        return await super().take(app, **take)

    async def warm_models(self, app: str, prefix_hash: str) -> frozenset[str]:
        await self.gate.wait()
        return await super().warm_models(app, prefix_hash)

    async def cache_get(self, app: str, key: str) -> bytes | None:
        await self.gate.wait()
        return await super().cache_get(app, key)


LONG_PREFIX = replace(
    SUMMARY,
    messages=(ChatMessage("system", "Answer politely and cite policy. " * 400), *SUMMARY.messages),
)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(LONG_PREFIX, id="while-deciding"),  # waits on the warmth read
        pytest.param(replace(SUMMARY, temperature=0.0), id="while-admitting"),  # the cache read
    ],
)
async def test_a_caller_who_leaves_early_holds_nothing(request_: ChatRequest) -> None:
    store = Slow()
    accounting = Accounting(store, StoreConfig())
    amounts = recording(accounting)
    async with pipeline(accounting) as (p, app):
        call = asyncio.create_task(p.route(app, request_))
        await eventually(lambda: bool(amounts) and accounting.budgets.open_holds == 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await accounting.admissions.drain()
        await accounting.rate_limits.drain()
        assert accounting.budgets.open_holds == 0
        store.gate.set()
        usage = (await accounting.budgets.read(app.name, app.config)).usage
        assert usage.reserved_micro_usd == 0 and usage.spent_micro_usd == 0
        # Its request went back to the bucket too.
        assert store.refunded == 1
    await accounting.aclose()


async def test_a_call_left_before_its_stream_began_is_recorded_and_holds_nothing() -> None:
    accounting = Accounting(MemoryStore(), StoreConfig())
    records: list[CallRecord] = []
    async with pipeline(accounting, observers=records) as (p, app):
        call = await p.route(app, SUMMARY)
        call.release()  # the caller went away while the decision was being sent
        call.release()  # once only
        await accounting.drain()
    (record,) = records
    assert record.status == CallStatus.CANCELLED and record.cost_micro_usd == 0
    assert record.model == "" and record.attempts == ()
    assert call.summary is not None and call.summary.finish_reason == CallStatus.CANCELLED
    assert (await accounting.budgets.read(app.name, app.config)).usage.reserved_micro_usd == 0
    await accounting.aclose()


class Unreachable(MemoryStore):
    """Redis gone: every operation of the request path fails to connect."""

    async def budget_usage(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("refused")

    async def admit(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("refused")

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("refused")

    async def warm_models(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("refused")


async def test_a_call_refused_by_fail_closed_is_recorded_with_its_decision() -> None:
    """Fail-closed refuses calls while Redis is away, and each refusal is a cost record with
    the decision it would have had, whatever the store is asked first: here the budget state
    for routing (a second after the last read it is read again), which used to end the call
    unrecorded."""
    store = FailoverStore(Unreachable(), MemoryStore(), policy="fail_closed", timeout_s=0.5)
    accounting = Accounting(store, StoreConfig())
    records: list[CallRecord] = []
    async with pipeline(accounting, observers=records) as (p, app):
        with pytest.raises(StoreUnavailable):
            await p.route(app, SUMMARY)
        await accounting.drain()
    (record,) = records
    assert record.status == CallStatus.REFUSED and record.cost_micro_usd == 0
    assert record.decision is not None and record.decision.model
    assert "fail_closed" in record.error
    await accounting.aclose()
