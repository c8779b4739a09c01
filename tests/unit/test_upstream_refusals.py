"""What a deployment's refusals do to a call and to its breaker, through the real adapter and
the fallback logic: a 429 that names no Retry-After, a rate-limit error in the stream before
the first token, and a 400 refusing a parameter the deployment's model does not take."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest

from router_service.breaker import CircuitBreaker
from router_service.catalog import Catalog
from router_service.config import CircuitBreakerConfig, OpenAIProviderConfig, load_config
from router_service.errors import InvalidRequest
from router_service.fallback import AttemptOutcome, FallbackStream, Target
from router_service.providers.base import ProviderRequest, TextDelta
from router_service.providers.openai_compat import OpenAICompatProvider
from tests.support.fake_wire import REFUSED_PARAMETERS

CATALOG = Catalog(load_config().models)
FIRST, SECOND = "glm-5.2", "kimi-2.7"

Answer = Callable[[], httpx.Response]


def sse(*chunks: Mapping[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def answered(text: str) -> httpx.Response:
    body = sse(
        {"choices": [{"index": 0, "delta": {"content": text}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    )
    return streamed(body)


def streamed(body: bytes) -> httpx.Response:
    """An event stream, read as it arrives (as from a server)."""
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(body)
    )


def error(status: int, message: str, code: str, **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return httpx.Response(status, headers=headers, json=body)


class Upstream:
    """An OpenAI-compatible server answering each model with `answers[model]()`; counts calls."""

    def __init__(self, answers: Mapping[str, Answer]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        self.calls.append(model)
        return self.answers[model]()


async def call(upstream: Upstream, breaker: CircuitBreaker) -> tuple[str, FallbackStream]:
    """One call to FIRST, falling back to SECOND; the answer's text."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(upstream)) as client:
        config = OpenAIProviderConfig(kind="openai", base_url="http://upstream/v1")
        provider = OpenAICompatProvider("openai", config, client, {})
        targets = [
            Target(model, model.deployments[0], provider)
            for model in (CATALOG[FIRST], CATALOG[SECOND])
        ]

        def request_for(target: Target) -> ProviderRequest:
            return ProviderRequest(target.model.name, (), (), 100, 0.0)

        stream = FallbackStream(targets, request_for, breaker=breaker)
        text = ""
        async for batch in stream.events():
            text += "".join(e.text for e in batch if isinstance(e, TextDelta))
    return text, stream


def breaker() -> CircuitBreaker:
    return CircuitBreaker(CircuitBreakerConfig(failures=5, cool_down_s=30))


@pytest.mark.parametrize(
    "refusal",
    [
        # OpenAI's usual 429: rate-limit headers, no Retry-After.
        lambda: error(
            429,
            "Rate limit reached for requests",
            "rate_limit_exceeded",
            **{
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "20s",
                "x-ratelimit-remaining-tokens": "9000",
                "x-ratelimit-reset-tokens": "6m0s",
            },
        ),
        # A 429 that says nothing about when.
        lambda: error(429, "Too many requests", "rate_limit_exceeded"),
        # A rate-limit error in the stream, before the first token.
        lambda: streamed(
            sse(
                {
                    "error": {
                        "message": "Rate limit reached. Please try again in 20s.",
                        "type": "tokens",
                        "code": "rate_limit_exceeded",
                    }
                }
            )
        ),
    ],
    ids=["rate-limit-headers", "nothing-said", "error-event"],
)
async def test_a_rate_limited_deployment_is_out_at_once(refusal: Answer) -> None:
    upstream = Upstream({FIRST: refusal, SECOND: lambda: answered("from the second")})
    b = breaker()
    text, stream = await call(upstream, b)
    assert text == "from the second"
    (failed, served) = stream.attempts
    assert failed.outcome is AttemptOutcome.FAILED and "HTTP 429 (rate_limit_exceeded)" in (
        failed.error
    )
    assert served.outcome is AttemptOutcome.SUCCEEDED
    # The next call does not ask the rate-limited deployment again (one 429 is enough).
    text, stream = await call(upstream, b)
    assert text == "from the second"
    assert [a.outcome for a in stream.attempts] == [
        AttemptOutcome.SKIPPED,
        AttemptOutcome.SUCCEEDED,
    ]
    assert upstream.calls == [FIRST, SECOND, SECOND]


@pytest.mark.parametrize(
    ("code", "message"),
    REFUSED_PARAMETERS,
)
async def test_a_refused_parameter_moves_on_to_the_next_candidate(code: str, message: str) -> None:
    upstream = Upstream(
        {FIRST: lambda: error(400, message, code), SECOND: lambda: answered("taken")}
    )
    b = breaker()
    text, stream = await call(upstream, b)
    assert text == "taken"
    (failed, served) = stream.attempts
    assert failed.outcome is AttemptOutcome.FAILED
    # The upstream's words are in the attempt: they say what to fix in the config.
    assert failed.error == f"openai: HTTP 400 ({code}): {message}"
    assert served.outcome is AttemptOutcome.SUCCEEDED
    # Counted against the deployment: `failures` of them in a row take it out.
    for _ in range(4):
        await call(upstream, b)
    _, stream = await call(upstream, b)
    assert stream.attempts[0].outcome is AttemptOutcome.SKIPPED


async def test_a_request_the_upstream_finds_invalid_still_ends_the_call() -> None:
    upstream = Upstream(
        {
            FIRST: lambda: error(400, "Invalid 'messages[1].role'", "invalid_value"),
            SECOND: lambda: answered("never"),
        }
    )
    with pytest.raises(InvalidRequest):
        await call(upstream, breaker())
    assert upstream.calls == [FIRST]
