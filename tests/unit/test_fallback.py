"""Fallbacks over batched provider streams: usage reported before the answer does not commit a
call to its target, and reaches the caller ahead of the answer once one does."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import pytest

from router_service.catalog import Catalog
from router_service.config import load_config
from router_service.cost import Usage
from router_service.errors import ProviderServerError, ProviderStreamBroken
from router_service.fallback import AttemptOutcome, FallbackStream, Target
from router_service.providers.base import (
    ProviderEvents,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    UsageReport,
)

CATALOG = Catalog(load_config().models)
USAGE = UsageReport(Usage(input_tokens=12))
END = StreamEnd("stop", Usage(12, 0, 0, 2), "m")


class Scripted:
    """A provider that yields `batches`, then raises `error` if one is given."""

    def __init__(self, name: str, batches: Sequence[ProviderEvents], error: Exception | None):
        self._name, self._batches, self._error = name, batches, error

    @property
    def name(self) -> str:
        return self._name

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvents, None]:
        for batch in self._batches:
            yield batch
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        pass


def targets(*providers: Scripted) -> list[Target]:
    model = CATALOG["glm-5.2"]
    return [Target(model, model.deployments[0], provider) for provider in providers]


def request_for(target: Target) -> ProviderRequest:
    return ProviderRequest("m", (), (), 100, None)


async def test_usage_before_the_answer_comes_with_its_first_batch() -> None:
    provider = Scripted("a", [(USAGE,), (TextDelta("Hi"), TextDelta("!")), (END,)], None)
    stream = FallbackStream(targets(provider), request_for)
    batches = [list(batch) async for batch in stream.events()]
    assert batches == [[USAGE, TextDelta("Hi"), TextDelta("!")], [END]]
    assert stream.serving is not None and stream.serving.provider is provider


async def test_a_failure_after_usage_alone_falls_back() -> None:
    failing = Scripted("a", [(USAGE,)], ProviderServerError("a: HTTP 503", provider="a"))
    working = Scripted("b", [(TextDelta("Hi"), END)], None)
    stream = FallbackStream(targets(failing, working), request_for)
    batches = [list(batch) async for batch in stream.events()]
    assert batches == [[TextDelta("Hi"), END]]
    assert [a.outcome for a in stream.attempts] == [
        AttemptOutcome.FAILED,
        AttemptOutcome.SUCCEEDED,
    ]


async def test_a_failure_after_the_first_batch_breaks_the_call() -> None:
    failing = Scripted("a", [(TextDelta("Hi"),)], ProviderServerError("a: reset", provider="a"))
    stream = FallbackStream(targets(failing, Scripted("b", [(END,)], None)), request_for)
    events = stream.events()
    assert list(await anext(events)) == [TextDelta("Hi")]
    with pytest.raises(ProviderStreamBroken, match="stream broke after the answer began"):
        await anext(events)
    assert [a.outcome for a in stream.attempts] == [AttemptOutcome.BROKEN]
