from __future__ import annotations

import random

import pytest

from router_service.chat import ChatMessage, ToolSpec
from router_service.config import SimulatedProviderConfig
from router_service.errors import ProviderServerError, ProviderStreamBroken
from router_service.providers.base import ProviderRequest, StreamEnd, TextDelta
from router_service.providers.simulated import SimulatedProvider

LONG_SYSTEM = "You are a careful assistant. " * 300  # ~2,100 tokens


def config(**changes: object) -> SimulatedProviderConfig:
    values: dict[str, object] = {"kind": "simulated", "ttft_ms": 0, "tokens_per_second": 1e6}
    values.update(changes)
    return SimulatedProviderConfig.model_validate(values)


def request(system: str = LONG_SYSTEM, max_output: int = 50) -> ProviderRequest:
    return ProviderRequest(
        model="m",
        messages=(ChatMessage("system", system), ChatMessage("user", "Hello there")),
        tools=(ToolSpec("t", "d", {"type": "object"}),),
        max_output_tokens=max_output,
        temperature=None,
    )


async def collect(provider: SimulatedProvider, req: ProviderRequest) -> tuple[str, StreamEnd]:
    text, end = [], None
    async for batch in provider.stream(req):
        (event,) = batch  # a simulated token is a read of its own
        if isinstance(event, TextDelta):
            text.append(event.text)
        else:
            assert isinstance(event, StreamEnd)
            end = event
    assert end is not None
    return "".join(text), end


async def test_streams_tokens_and_reports_usage() -> None:
    text, end = await collect(SimulatedProvider("sim", config()), request(max_output=30))
    assert end.usage.output_tokens == 30
    assert len(text.split(" ")) == 30
    assert end.finish_reason == "length"
    assert end.usage.input_tokens > 2000


async def test_same_prompt_same_answer() -> None:
    provider = SimulatedProvider("sim", config())
    assert (await collect(provider, request()))[0] == (await collect(provider, request()))[0]


async def test_openai_style_prefix_cache() -> None:
    now = [0.0]
    provider = SimulatedProvider("sim", config(prefix_cache_ttl_s=60), clock=lambda: now[0])
    first = (await collect(provider, request()))[1].usage
    assert first.cached_input_tokens == 0 and first.cache_write_tokens == 0
    second = (await collect(provider, request()))[1].usage
    assert second.cached_input_tokens >= 1024
    assert (second.cached_input_tokens - 1024) % 128 == 0
    now[0] += 120  # past the TTL
    third = (await collect(provider, request()))[1].usage
    assert third.cached_input_tokens == 0


async def test_anthropic_style_writes_then_reads() -> None:
    provider = SimulatedProvider("sim", config(style="anthropic"))
    first = (await collect(provider, request()))[1].usage
    assert first.cache_write_tokens > 1024 and first.cached_input_tokens == 0
    second = (await collect(provider, request()))[1].usage
    assert second.cached_input_tokens == first.cache_write_tokens
    assert second.input_tokens == first.input_tokens


async def test_short_prefixes_are_not_cached() -> None:
    provider = SimulatedProvider("sim", config())
    await collect(provider, request(system="short"))
    usage = (await collect(provider, request(system="short")))[1].usage
    assert usage.cached_input_tokens == 0


async def test_failure_before_first_token() -> None:
    provider = SimulatedProvider("sim", config(failure={"rate": 1.0}), rng=random.Random(1))
    with pytest.raises(ProviderServerError, match="503"):
        await collect(provider, request())


async def test_failure_mid_stream() -> None:
    provider = SimulatedProvider(
        "sim", config(failure={"rate": 1.0, "mode": "mid_stream"}), rng=random.Random(1)
    )
    seen = []
    with pytest.raises(ProviderStreamBroken):
        async for batch in provider.stream(request(max_output=20)):
            seen += batch
    assert len(seen) == 10
