"""Route over real gRPC with the example configs pointed at the fake provider on loopback:
what a caller sees (text, usage, cost, attempts, status codes) is what the upstream did."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from grpc import aio

from router_service._proto import router_pb2 as pb
from router_service.config import RouterConfig
from router_service.telemetry import attributes as a
from router_service.telemetry import metrics as m
from tests.support.configs import ADMIN_KEY, DEMO_KEY
from tests.support.fake_provider import FakeProvider, Reply
from tests.support.fake_wire import words
from tests.support.provider_configs import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    environ,
    example_raw,
    merge,
    mixed_config,
)
from tests.support.servers import Running, auth, running_router
from tests.support.telemetry import Recorded

SYSTEM = "You summarize incident reports for the on-call engineer."


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples keep the call log's default directory, `var/calllog` under the working
    directory: run there, not in the checkout."""
    monkeypatch.chdir(tmp_path)


def route_request(**changes: Any) -> pb.RouteRequest:
    values: dict[str, Any] = {
        "task": "summarization",
        "messages": [
            pb.Message(role="system", content=SYSTEM),
            pb.Message(role="user", content="Summarize: the database failed over at 02:14."),
        ],
        "hints": pb.RouteHints(tier=pb.TIER_PREFERENCE_CHEAP),
    }
    values.update(changes)
    return pb.RouteRequest(**values)


@asynccontextmanager
async def on_fake(
    config: RouterConfig | None = None, **fake_args: Any
) -> AsyncIterator[tuple[Running, FakeProvider]]:
    fake = FakeProvider(**fake_args)
    async with fake, running_router(config or mixed_config(), environ=environ(fake.url)) as running:
        yield running, fake


async def route(running: Running, request: pb.RouteRequest) -> list[pb.RouteEvent]:
    return [e async for e in running.router.Route(request, metadata=auth(DEMO_KEY))]


async def test_streams_the_upstream_text_with_its_usage_and_cost() -> None:
    async with on_fake() as (running, fake):
        fake.script(
            "glm-5.2",
            Reply(
                text="Failover at 02:14 took 40 s; no data was lost.",
                input_tokens=2048,
                cached_tokens=1536,
                output_tokens=14,
            ),
        )
        got = await route(running, route_request())
        decision, done = got[0].decision, got[-1].done
        text = "".join(e.delta.text for e in got[1:-1])
        assert decision.model == "glm-5.2" and decision.provider == "openai-compatible"
        assert text == "Failover at 02:14 took 40 s; no data was lost."
        assert (
            done.usage.input_tokens,
            done.usage.cached_input_tokens,
            done.usage.cache_write_tokens,
            done.usage.output_tokens,
        ) == (2048, 1536, 0, 14)
        # glm-5.2 in the example: $0.95 input, $0.19 cached, $1.40 output per Mtok:
        # 512 x 0.95 + 1,536 x 0.19 + 14 x 1.40 = 486.4 + 291.84 + 19.6 = 797.84 micro-dollars.
        assert done.cost_micro_usd == 798
        assert done.cost_usd == pytest.approx(0.000798)
        assert [a.outcome for a in done.attempts] == [pb.ATTEMPT_OUTCOME_SUCCEEDED]
        sent = fake.received[0]
        assert sent.path == "/v1/chat/completions"
        assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert sent.body["stream_options"] == {"include_usage": True}
        assert sent.body["messages"][0] == {"role": "system", "content": SYSTEM}


async def test_a_500_from_the_first_candidate_is_answered_by_the_fallback() -> None:
    async with on_fake() as (running, fake):
        fake.script("glm-5.2", Reply(status=500, error_message="internal error"))
        fake.script("kimi-2.7", Reply(text="Answer from the fallback."))
        got = await route(running, route_request())
        done = got[-1].done
        assert "".join(e.delta.text for e in got[1:-1]) == "Answer from the fallback."
        assert done.model == "kimi-2.7"
        assert [(a.model, a.outcome) for a in done.attempts] == [
            ("glm-5.2", pb.ATTEMPT_OUTCOME_FAILED),
            ("kimi-2.7", pb.ATTEMPT_OUTCOME_SUCCEEDED),
        ]
        assert "HTTP 500" in done.attempts[0].error


async def test_spans_and_metrics_name_providers_as_the_genai_conventions_do() -> None:
    """`gen_ai.provider.name` is the API's identifier (`openai`, `anthropic`) or the configured
    `genai_provider_name`, not whatever the provider entry is called."""
    config = mixed_config(providers={"openai-compatible": {"genai_provider_name": "deepseek"}})
    recorded = Recorded()
    fake = FakeProvider()
    async with (
        fake,
        running_router(
            config,
            environ=environ(fake.url),
            tracer_provider=recorded.tracer_provider,
            meter_provider=recorded.meter_provider,
        ) as running,
    ):
        await route(running, route_request())
        frontier = route_request(
            task="code_review", hints=pb.RouteHints(force_model="claude-opus-4.8")
        )
        await route(running, frontier)
    systems = {
        (span.attributes or {}).get(a.MODEL): (span.attributes or {}).get(a.GEN_AI_PROVIDER_NAME)
        for span in recorded.spans()
        if span.name.startswith("chat ")
    }
    assert systems == {"glm-5.2": "deepseek", "claude-opus-4.8": "anthropic"}
    # Where each request went: the fake provider's loopback host and port, as the base URL
    # from the environment names it.
    fake_url = urlsplit(fake.url)
    servers = {
        ((span.attributes or {}).get(a.SERVER_ADDRESS), (span.attributes or {}).get(a.SERVER_PORT))
        for span in recorded.spans()
        if span.name.startswith("chat ")
    }
    assert servers == {(fake_url.hostname, fake_url.port)}
    measured = {
        point.attributes[a.GEN_AI_PROVIDER_NAME] for point in recorded.points(m.OPERATION_DURATION)
    }
    assert measured == {"deepseek", "anthropic"}
    recorded.shutdown()


async def test_anthropic_cache_markers_and_cache_costs() -> None:
    raw = merge(
        example_raw("anthropic"), {"server": {"listen": "127.0.0.1:0", "grace_period_s": 1}}
    )
    # Claude Haiku 4.5 caches prefixes of 4,096 tokens and more: this one (about 4,500) gets a
    # marker, one of about 2,300 none.
    long_system = "Follow the review checklist below exactly.\n" + "- check item\n" * 1400
    shorter_system = "Follow the review checklist below exactly.\n" + "- check item\n" * 700
    async with on_fake(RouterConfig.model_validate(raw)) as (running, fake):
        fake.script(
            "claude-haiku-4-5",
            Reply(input_tokens=4700, cache_write_tokens=4600, tokens=20),
            Reply(input_tokens=4700, cached_tokens=4600, tokens=20),
        )
        messages = [
            pb.Message(role="system", content=long_system),
            pb.Message(role="user", content="Review: x = x + 1"),
        ]
        first = (await route(running, route_request(messages=messages)))[-1].done
        second = (await route(running, route_request(messages=messages)))[-1].done
        sent = fake.received[0]
        assert sent.headers["x-api-key"] == ANTHROPIC_KEY
        assert sent.body["system"][-1]["cache_control"] == {"type": "ephemeral"}
        # claude-haiku-4.5: $1 input, $0.10 cache read, $1.25 cache write, $5 output per Mtok.
        assert (first.usage.input_tokens, first.usage.cache_write_tokens) == (4700, 4600)
        assert first.cost_micro_usd == 100 + 4600 * 1.25 + 20 * 5  # 5,950
        assert (second.usage.input_tokens, second.usage.cached_input_tokens) == (4700, 4600)
        assert second.cost_micro_usd == 100 + 460 + 100
        messages[0] = pb.Message(role="system", content=shorter_system)
        await route(running, route_request(messages=messages))
        assert "cache_control" not in fake.received[-1].body["system"][-1]


async def test_a_stream_cut_mid_way_is_unavailable() -> None:
    async with on_fake() as (running, fake):
        fake.script("glm-5.2", Reply(cut_after_tokens=5))
        seen: list[pb.RouteEvent] = []
        with pytest.raises(aio.AioRpcError) as caught:
            async for event in running.router.Route(route_request(), metadata=auth(DEMO_KEY)):
                seen.append(event)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "stream broke after the answer began" in (caught.value.details() or "")
        # The five tokens sent before the cut reached the caller (in one or more deltas).
        assert [e.WhichOneof("event") for e in seen[:2]] == ["decision", "delta"]
        assert {e.WhichOneof("event") for e in seen[1:]} == {"delta"}
        text = "".join(e.delta.text for e in seen[1:])
        assert text == " ".join(list(words(5)))
        assert [r.model for r in fake.received] == ["glm-5.2"]


async def test_a_bad_request_upstream_is_invalid_argument() -> None:
    async with on_fake() as (running, fake):
        fake.script("glm-5.2", Reply(status=400, error_message="Invalid 'messages[1]'"))
        with pytest.raises(aio.AioRpcError) as caught:
            await route(running, route_request())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Invalid 'messages[1]'" in (caught.value.details() or "")


async def test_the_caller_deadline_closes_a_stalled_upstream() -> None:
    async with on_fake() as (running, fake):
        fake.script("glm-5.2", Reply(stall_after_tokens=2))
        started = time.perf_counter()
        with pytest.raises(aio.AioRpcError) as caught:
            async for _ in running.router.Route(
                route_request(), metadata=auth(DEMO_KEY), timeout=0.5
            ):
                pass
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        closed = await fake.disconnected(fake.received[0])
        # At the 0.5 s deadline, not when the idle limit (2 s) would have cut the stream.
        assert closed is not None and closed - started < 1.5


async def test_provider_keys_never_reach_the_caller() -> None:
    async with on_fake(api_key="not-the-configured-key") as (running, _):
        with pytest.raises(aio.AioRpcError) as caught:
            await route(running, route_request())
        details = caught.value.details() or ""
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "HTTP 401" in details  # the status and the upstream's code, not its text
        assert "Incorrect API key" not in details and OPENAI_KEY not in details


async def test_list_models_reports_open_breakers() -> None:
    config = mixed_config(circuit_breaker={"failures": 1, "cool_down_s": 60})
    async with on_fake(config) as (running, fake):
        fake.script("glm-5.2", Reply(status=503))
        await route(running, route_request())
        models = await running.admin.ListModels(pb.ListModelsRequest(), metadata=auth(ADMIN_KEY))
        health = {m.name: m.healthy for m in models.models}
        assert health == {
            "glm-5.2": False,
            "kimi-2.7": True,
            "gpt-5.5": True,
            "claude-opus-4.8": True,
        }
        explained = await running.router.Explain(route_request(), metadata=auth(DEMO_KEY))
        assert explained.model == "kimi-2.7"


async def test_a_429_without_retry_after_takes_the_deployment_out() -> None:
    # OpenAI's 429s carry no Retry-After: one still takes the deployment out (for cool_down_s).
    async with on_fake() as (running, fake):
        fake.script("glm-5.2", Reply(status=429, error_message="Rate limit reached"))
        done = (await route(running, route_request()))[-1].done
        assert done.model == "kimi-2.7"
        assert "HTTP 429 (rate_limit_exceeded)" in done.attempts[0].error
        models = await running.admin.ListModels(pb.ListModelsRequest(), metadata=auth(ADMIN_KEY))
        assert {m.name: m.healthy for m in models.models}["glm-5.2"] is False
        # The next call goes to kimi-2.7 first (unhealthy models come last), never to glm-5.2.
        done = (await route(running, route_request()))[-1].done
        assert done.model == "kimi-2.7"
        assert [r.model for r in fake.received] == ["glm-5.2", "kimi-2.7", "kimi-2.7"]


async def test_a_refused_parameter_is_answered_by_the_next_candidate() -> None:
    refused = (
        "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead."
    )
    async with on_fake() as (running, fake):
        fake.script(
            "glm-5.2", Reply(status=400, error_type="unsupported_parameter", error_message=refused)
        )
        got = await route(running, route_request())
        done = got[-1].done
        assert done.model == "kimi-2.7"
        assert [(a.model, a.outcome) for a in done.attempts] == [
            ("glm-5.2", pb.ATTEMPT_OUTCOME_FAILED),
            ("kimi-2.7", pb.ATTEMPT_OUTCOME_SUCCEEDED),
        ]
        # What to fix in the deployment's config, in the upstream's words.
        assert done.attempts[0].error.endswith(f"(unsupported_parameter): {refused}")
        # A server that is not OpenAI's gets max_tokens (max_tokens_field: auto).
        assert all("max_tokens" in r.body for r in fake.received)
        assert not any("max_completion_tokens" in r.body for r in fake.received)
