"""A built-in provider that behaves like a real one, so the service runs with no API keys.

It streams plausible text token by token after a configurable time to first token, reports
usage the way the real API it imitates does, and keeps a prefix cache with a TTL: a request
whose leading bytes (tools, then system prompt) match a recent one comes back with cached input
tokens, exactly as OpenAI's automatic prefix cache or Anthropic's explicit one would bill it.
Like the real caches it keys on the bytes as sent, so logically equal but differently
serialized prefixes miss. It can be told to fail, to exercise fallbacks and broken streams.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable

from router_service.config import SimulatedProviderConfig
from router_service.cost import Usage
from router_service.errors import (
    ProviderRateLimited,
    ProviderServerError,
    ProviderStreamBroken,
)
from router_service.providers.base import ProviderEvents, ProviderRequest, StreamEnd, TextDelta
from router_service.providers.simulated_judge import simulated_verdict
from router_service.tokens import estimate_tokens

__all__ = ["SimulatedProvider"]

# OpenAI bills cache hits in blocks of 128 tokens past the first 1,024.
_OPENAI_CACHE_BLOCK = 128
_MAX_CACHED_PREFIXES = 4096

_SENTENCES = (
    "Here is a concise answer based on the information you provided.",
    "The main point is that the change keeps the existing behaviour intact.",
    "First, check the inputs and confirm that each field has the expected type.",
    "Second, compare the result with the reference values before drawing a conclusion.",
    "In short, the request can be handled safely with the steps below.",
    "The summary covers the key decisions, the open questions and the next steps.",
    "One risk is that the edge cases around empty input are not yet covered by tests.",
    "The customer asked for a refund, and the policy allows it within thirty days.",
    "This function returns early when the list is empty, which avoids an index error.",
    "Overall the proposal is sound, though the rollout plan needs a clear owner.",
    "The data suggests a steady increase over the last quarter, mostly from new accounts.",
    "To reproduce the issue, run the command twice and compare the two outputs.",
    "A simpler approach would be to cache the result and invalidate it on write.",
    "The answer is B, because only that option is consistent with every clue.",
    "Let me know if you would like a shorter version or more detail on any part.",
    "Each step is independent, so they can run in parallel without extra locking.",
)


class SimulatedProvider:
    """Streams synthetic answers with a real provider's latency, usage and cache behaviour."""

    def __init__(
        self,
        name: str,
        config: SimulatedProviderConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._name = name
        self._config = config
        self._clock = clock
        self._rng = rng or random.Random()
        # prefix digest -> expiry time; oldest first, bounded so it cannot grow without limit.
        self._prefixes: OrderedDict[bytes, float] = OrderedDict()

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        self._prefixes.clear()

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvents, None]:
        config = self._config
        failing = config.failure.rate > 0 and self._rng.random() < config.failure.rate
        if failing and config.failure.mode != "mid_stream":
            await asyncio.sleep(config.ttft_ms / 4000)
            if config.failure.mode == "rate_limited":
                raise ProviderRateLimited(
                    f"{self._name}: simulated rate limit", provider=self._name, retry_after_s=1.0
                )
            raise ProviderServerError(
                f"{self._name}: simulated upstream error (503)", provider=self._name, status=503
            )
        usage_in = self._input_usage(request)
        pieces = self._answer(request)
        await asyncio.sleep(config.ttft_ms / 1000)
        interval = 1.0 / config.tokens_per_second
        first = self._clock()
        for i, piece in enumerate(pieces):
            if failing and i == len(pieces) // 2:
                raise ProviderStreamBroken(
                    f"{self._name}: simulated connection reset mid-stream", provider=self._name
                )
            yield (TextDelta(piece),)
            # Pace against the clock rather than sleeping a fixed interval, so the token rate
            # holds however long the consumer takes per token.
            delay = first + (i + 1) * interval - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
        finish = "length" if len(pieces) >= request.max_output_tokens else "stop"
        usage = Usage(
            input_tokens=usage_in.input_tokens,
            cached_input_tokens=usage_in.cached_input_tokens,
            cache_write_tokens=usage_in.cache_write_tokens,
            output_tokens=len(pieces),
        )
        yield (StreamEnd(finish_reason=finish, usage=usage, model=request.model),)

    def _answer(self, request: ProviderRequest) -> list[str]:
        """Word pieces of a plausible answer, the same for the same prompt and model (a judge's
        verdict when asked to judge)."""
        verdict = simulated_verdict(request.messages)
        if verdict is not None:
            return re.findall(r"\S+\s*", verdict)
        last_user = next(
            (m.content for m in reversed(request.messages) if m.role == "user"), request.model
        )
        seed_text = f"{request.model}\x00{last_user}"
        seed = int.from_bytes(hashlib.blake2b(seed_text.encode(), digest_size=8).digest())
        rng = random.Random(seed)
        limit = min(self._config.answer_tokens, request.max_output_tokens)
        pieces: list[str] = []
        while len(pieces) < limit:
            words = rng.choice(_SENTENCES).split(" ")
            pieces.extend(w if not pieces else " " + w for w in words)
        return pieces[:limit]

    def _input_usage(self, request: ProviderRequest) -> Usage:
        prompt_tokens = request.prompt_tokens or sum(
            estimate_tokens(m.content) + 4 for m in request.messages
        )
        prefix = self._prefix_bytes(request)
        prefix_tokens = estimate_tokens(prefix.decode())
        if prefix_tokens < self._config.min_cacheable_tokens:
            return Usage(input_tokens=prompt_tokens)
        hit = self._touch(hashlib.sha256(prefix).digest())
        if self._config.style == "anthropic":
            if hit:
                return Usage(input_tokens=prompt_tokens, cached_input_tokens=prefix_tokens)
            return Usage(input_tokens=prompt_tokens, cache_write_tokens=prefix_tokens)
        if not hit:
            return Usage(input_tokens=prompt_tokens)
        cached = prefix_tokens - (prefix_tokens - 1024) % _OPENAI_CACHE_BLOCK
        return Usage(input_tokens=prompt_tokens, cached_input_tokens=min(cached, prompt_tokens))

    @staticmethod
    def _prefix_bytes(request: ProviderRequest) -> bytes:
        """The request's leading bytes as a provider would see them: tools, then system."""
        tools = [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in request.tools
        ]
        system = [m.content for m in request.messages if m.role == "system"]
        return (json.dumps(tools) + "\n".join(system)).encode()

    def _touch(self, digest: bytes) -> bool:
        """Whether `digest` is cached now; either way it is cached for another TTL after."""
        now = self._clock()
        expiry = self._prefixes.pop(digest, None)
        hit = expiry is not None and expiry > now
        self._prefixes[digest] = now + self._config.prefix_cache_ttl_s
        if len(self._prefixes) > _MAX_CACHED_PREFIXES:
            self._prefixes.popitem(last=False)
        return hit
