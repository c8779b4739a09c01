"""Fallbacks, timeouts, breakers and billing of broken streams: the real pipeline, the real
adapters and the real HTTP client against the fake provider on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from router_service.auth import App, Authenticator
from router_service.breaker import CircuitBreaker
from router_service.catalog import Catalog
from router_service.chat import ChatMessage, ChatRequest, Hints, TierPreference
from router_service.config import RouterConfig
from router_service.cost import Usage
from router_service.errors import (
    AllProvidersFailed,
    InvalidRequest,
    ProviderStreamBroken,
)
from router_service.fallback import AttemptOutcome
from router_service.pipeline import Pipeline
from router_service.providers.base import TextDelta, ToolCallDelta
from router_service.providers.http import build_http_client
from router_service.providers.registry import build_providers
from router_service.records import CallRecord, CallStatus
from router_service.tokens import tokens_for_length
from tests.support.fake_provider import FakeProvider, Reply
from tests.support.provider_configs import OPENAI_KEY, environ, mixed_config


@dataclass
class Harness:
    fake: FakeProvider
    pipeline: Pipeline
    app: App
    records: list[CallRecord]

    def observe(self, record: CallRecord) -> None:
        self.records.append(record)

    async def call(
        self, text: str = "Summarize the incident.", **hints: Any
    ) -> tuple[str, list[TextDelta | ToolCallDelta], Any]:
        request = ChatRequest(
            request_id=f"r{len(self.records)}",
            task="summarization",
            messages=(ChatMessage("system", "Be brief."), ChatMessage("user", text)),
            hints=Hints(**hints),
        )
        call = await self.pipeline.start(self.app, await self.pipeline.plan(self.app, request))
        deltas = []
        async with aclosing(call.stream()) as stream:
            async for batch in stream:
                deltas += batch
        text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
        return text, deltas, call.summary


@asynccontextmanager
async def harness(config: RouterConfig | None = None, **fake_args: Any) -> AsyncIterator[Harness]:
    config = config or mixed_config()
    async with FakeProvider(**fake_args) as fake:
        env = environ(fake.url)
        async with build_http_client(config.providers, env) as client:
            records: list[CallRecord] = []
            h = Harness(fake, None, Authenticator(config, env).apps[0], records)  # type: ignore[arg-type]
            h.pipeline = Pipeline(
                catalog=Catalog(config.models),
                providers=build_providers(config.providers, client, env),
                difficulty=None,
                observers=[h],
                breaker=CircuitBreaker(config.circuit_breaker),
            )
            yield h


CHEAP = {"tier": TierPreference.CHEAP}


async def test_500_falls_back_to_the_next_candidate() -> None:
    async with harness() as h:
        h.fake.script("glm-5.2", Reply(status=500, error_message="upstream exploded"))
        text, _, summary = await h.call(**CHEAP)
        assert text and summary.model == "kimi-2.7"
        assert [(a.model, a.outcome) for a in summary.attempts] == [
            ("glm-5.2", AttemptOutcome.FAILED),
            ("kimi-2.7", AttemptOutcome.SUCCEEDED),
        ]
        # The status and the upstream's error code, never its free text (it may quote the
        # prompt): the attempt goes to the call log and the trace.
        assert "HTTP 500" in summary.attempts[0].error
        assert "exploded" not in summary.attempts[0].error
        assert h.records[0].status == CallStatus.OK


async def test_a_bad_request_ends_the_call_without_burning_candidates() -> None:
    async with harness() as h:
        h.fake.script("glm-5.2", Reply(status=400, error_message="messages: bad role"))
        with pytest.raises(InvalidRequest, match=r"glm-5\.2 refused the request: .*HTTP 400") as e:
            await h.call(**CHEAP)
        # The caller learns what the upstream said about its request; the record does not.
        assert e.value.caller_message.endswith(": messages: bad role")
        assert "bad role" not in e.value.message and "bad role" not in h.records[0].error
        assert [r.model for r in h.fake.received] == ["glm-5.2"]
        assert h.records[0].status == CallStatus.REJECTED
        assert h.records[0].cost_micro_usd == 0


async def test_context_overflow_falls_back_without_blaming_the_provider() -> None:
    async with harness() as h:
        h.fake.script(
            "glm-5.2",
            Reply(status=400, error_type="context_length_exceeded", error_message="too long"),
        )
        _, _, summary = await h.call(**CHEAP)
        assert summary.model == "kimi-2.7"
        assert h.pipeline.breaker.unhealthy(Catalog(mixed_config().models)) == frozenset()


async def test_429_takes_the_deployment_out_until_retry_after() -> None:
    async with harness() as h:
        h.fake.script("glm-5.2", Reply(status=429, retry_after="60"))
        _, _, first = await h.call(**CHEAP)
        _, _, second = await h.call(**CHEAP)
        assert first.model == second.model == "kimi-2.7"
        # The second call did not even try glm-5.2: the policy put it last as unhealthy.
        assert [r.model for r in h.fake.received] == ["glm-5.2", "kimi-2.7", "kimi-2.7"]
        assert h.records[1].decision.candidates[0] == "kimi-2.7"
        assert [a.outcome for a in second.attempts] == [AttemptOutcome.SUCCEEDED]


async def test_the_breaker_opens_skips_and_lets_a_probe_back_in() -> None:
    config = mixed_config(circuit_breaker={"failures": 2, "cool_down_s": 0.3})
    async with harness(config) as h:
        h.fake.script("glm-5.2", Reply(status=503), Reply(status=503))
        await h.call(**CHEAP)
        await h.call(**CHEAP)
        # Open: the policy orders glm-5.2 last, so kimi-2.7 answers without trying it ...
        _, _, routed = await h.call(**CHEAP)
        assert h.records[-1].decision.candidates == ("kimi-2.7", "glm-5.2")
        assert [a.model for a in routed.attempts] == ["kimi-2.7"]
        # ... and a call forced onto it is refused without a request.
        with pytest.raises(AllProvidersFailed, match=r"glm-5\.2: circuit breaker open"):
            await h.call(force_model="glm-5.2")
        assert h.records[-1].attempts[0].outcome is AttemptOutcome.SKIPPED
        assert len(h.fake.requests_for("glm-5.2")) == 2
        await asyncio.sleep(0.35)
        # Cooled down: one probe goes, succeeds, and the breaker closes.
        _, _, probe = await h.call(**CHEAP)
        assert probe.model == "glm-5.2"
        assert len(h.fake.requests_for("glm-5.2")) == 3
        assert h.pipeline.breaker.unhealthy(Catalog(config.models)) == frozenset()


async def test_the_key_never_shows_in_errors() -> None:
    async with harness(api_key="the-right-key") as h:
        with pytest.raises(AllProvidersFailed) as caught:
            await h.call(**CHEAP)
        assert "HTTP 401" in caught.value.message
        assert "Incorrect API key" not in caught.value.caller_message
        assert OPENAI_KEY not in caught.value.message
        assert all(OPENAI_KEY not in a.error for a in h.records[0].attempts)
        assert OPENAI_KEY not in h.records[0].error


async def test_slow_first_token_falls_back() -> None:
    config = mixed_config(providers={"openai-compatible": {"timeouts": {"first_token": 0.3}}})
    async with harness(config) as h:
        h.fake.script("glm-5.2", Reply(first_token_delay_s=2.0))
        started = time.perf_counter()
        _, _, summary = await h.call(**CHEAP)
        assert time.perf_counter() - started < 1.5
        assert summary.model == "kimi-2.7"
        assert "no token within 0.3 s" in summary.attempts[0].error


async def test_a_cut_before_the_first_token_falls_back() -> None:
    async with harness() as h:
        h.fake.script("glm-5.2", Reply(cut_after_tokens=0))
        _, _, summary = await h.call(**CHEAP)
        assert summary.model == "kimi-2.7"
        assert summary.attempts[0].outcome is AttemptOutcome.FAILED


async def test_a_refused_connection_falls_back() -> None:
    config = mixed_config(
        providers={"dead": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        models={
            "glm-5.2": {
                "provider": None,
                "deployments": [{"provider": "dead"}, {"provider": "openai-compatible"}],
            }
        },
    )
    async with harness(config) as h:
        # Short prefixes are spread over deployments by request id: call until one lands on
        # the dead deployment first (the ids are fixed, so this is deterministic).
        for _ in range(8):
            _, _, summary = await h.call(**CHEAP)
            if summary.attempts[0].provider == "dead":
                break
        # The same model's other deployment comes next.
        assert [(a.model, a.provider, a.outcome) for a in summary.attempts] == [
            ("glm-5.2", "dead", AttemptOutcome.FAILED),
            ("glm-5.2", "openai-compatible", AttemptOutcome.SUCCEEDED),
        ]
        assert "cannot connect" in summary.attempts[0].error


async def test_a_stall_after_the_first_token_breaks_the_stream() -> None:
    config = mixed_config(providers={"openai-compatible": {"timeouts": {"idle": 0.3}}})
    async with harness(config) as h:
        h.fake.script("glm-5.2", Reply(stall_after_tokens=3))
        with pytest.raises(ProviderStreamBroken, match=r"no data for 0\.3 s"):
            await h.call(**CHEAP)
        record = h.records[0]
        assert record.status == CallStatus.BROKEN
        assert [a.outcome for a in record.attempts] == [AttemptOutcome.BROKEN]
        # Nobody else is tried after a token reached the caller.
        assert [r.model for r in h.fake.received] == ["glm-5.2"]
        # Billed for what was produced: the prompt estimate and the three tokens' text.
        assert record.usage.output_tokens == tokens_for_length(len("The quarterly report"))
        assert record.cost_micro_usd > 0
        assert await h.fake.disconnected(h.fake.received[0]) is not None


async def test_a_broken_anthropic_stream_is_billed_the_reported_input() -> None:
    async with harness() as h:
        h.fake.script(
            "claude-opus-4-8",
            Reply(cut_after_tokens=4, input_tokens=5000, cached_tokens=4096, cache_write_tokens=0),
        )
        with pytest.raises(ProviderStreamBroken):
            await h.call(force_model="claude-opus-4.8")
        record = h.records[0]
        output = tokens_for_length(len("The quarterly report shows"))
        assert record.usage == Usage(5000, 4096, 0, output)
        # 904 x $5 + 4,096 x $0.50 + output x $25 per million tokens.
        assert record.cost_micro_usd == round(904 * 5 + 4096 * 0.5 + output * 25)


async def test_an_error_event_before_the_first_token_falls_back() -> None:
    async with harness() as h:
        h.fake.script("claude-opus-4-8", Reply(error_event_after_tokens=0))
        _, _, summary = await h.call(force_model="claude-opus-4.8")
        assert summary.model == "gpt-5.5"
        assert "HTTP 529" in summary.attempts[0].error
        # The failed attempt's message_start usage is not billed to the answer.
        assert summary.usage.cache_write_tokens == 0


async def test_cancelling_closes_the_upstream_at_once() -> None:
    async with harness() as h:
        h.fake.script("glm-5.2", Reply(stall_after_tokens=2))
        request = ChatRequest(
            request_id="cancel-me",
            task="summarization",
            messages=(ChatMessage("user", "Go"),),
            hints=Hints(tier=TierPreference.CHEAP),
        )
        call = await h.pipeline.start(h.app, await h.pipeline.plan(h.app, request))
        stream = call.stream()
        await anext(stream)  # the answer has begun (the two tokens may come in one read)
        closed_at = time.perf_counter()
        await stream.aclose()
        disconnected = await h.fake.disconnected(h.fake.received[0])
        # At once, not when the idle limit (2 s) would have cut the stalled stream.
        assert disconnected is not None and disconnected - closed_at < 1.0
        assert h.records[0].status == CallStatus.CANCELLED
        assert h.records[0].usage.output_tokens > 0


async def test_not_streamed_provider() -> None:
    config = mixed_config(providers={"openai-compatible": {"stream": False}})
    async with harness(config) as h:
        h.fake.script(
            "glm-5.2", Reply(text="All systems nominal.", input_tokens=40, cached_tokens=8)
        )
        text, deltas, summary = await h.call(**CHEAP)
        assert text == "All systems nominal." and len(deltas) == 1
        assert summary.usage == Usage(40, 8, 0, 3)
        assert "stream" not in h.fake.received[0].body


async def test_connections_are_pooled_across_calls() -> None:
    async with harness() as h:
        for _ in range(3):
            await h.call(**CHEAP)
        ports = {r.client_port for r in h.fake.received}
        assert len(ports) == 1, "each call should reuse the pooled keep-alive connection"
