"""Batching a stream for gRPC: order kept, nothing lost, errors after the items before them,
a new batch handed on before the next read, and a caller who leaves closes the source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_service.api.batching import HIGH_WATER, Batches
from router_service.api.convert import delta_events
from router_service.providers.base import TextDelta, ToolCallDelta


async def paced(reads: list[list[int]], pauses: set[int]) -> AsyncGenerator[list[int], None]:
    for i, read in enumerate(reads):
        if i in pauses:
            await asyncio.sleep(0)
        yield read


@settings(deadline=None)
@given(
    st.lists(st.lists(st.integers(), min_size=1, max_size=5), max_size=40),
    st.sets(st.integers(0, 40)),
)
def test_every_item_in_order(reads: list[list[int]], pauses: set[int]) -> None:
    async def collect() -> list[list[int]]:
        return [batch async for batch in Batches(paced(reads, pauses))]

    got = asyncio.run(collect())
    assert [x for batch in got for x in batch] == [x for read in reads for x in read]
    assert all(got)


async def test_items_ready_together_go_together() -> None:
    async def burst() -> AsyncGenerator[list[int], None]:
        yield [1]
        await asyncio.sleep(0.01)  # the consumer takes [1] while this waits
        yield [2, 3]
        yield [4]
        yield [5]

    # [2, 3] starts a batch and goes at once; the reads after it gather while it is sent.
    stream = Batches(burst())
    assert await anext(stream) == [1]
    assert await anext(stream) == [2, 3]
    await asyncio.sleep(0.01)
    assert [b async for b in stream] == [[4, 5]]


async def test_a_new_batch_goes_out_before_the_next_read_is_parsed() -> None:
    parsed: list[int] = []

    async def received_at_once() -> AsyncGenerator[list[int], None]:
        for read in ([1], [2, 3], [4]):
            parsed.extend(read)
            yield read  # no wait for the network in between

    stream = Batches(received_at_once())
    assert await anext(stream) == [1]
    assert parsed == [1]  # the consumer had [1] before [2, 3] was parsed
    assert [x async for batch in stream for x in batch] == [2, 3, 4]


async def test_an_error_comes_after_the_items_before_it() -> None:
    async def failing() -> AsyncGenerator[list[int], None]:
        yield [1]
        yield [2]
        raise RuntimeError("upstream broke")

    seen: list[int] = []
    with pytest.raises(RuntimeError, match="upstream broke"):
        async for batch in Batches(failing()):
            seen += batch
    assert seen == [1, 2]


async def test_leaving_early_closes_the_source() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncGenerator[list[int], None]:
        try:
            i = 0
            while True:
                yield [i]
                i += 1
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    stream = Batches(endless())
    await anext(stream)
    await stream.aclose()
    assert closed.is_set()


async def test_a_slow_consumer_pauses_the_producer() -> None:
    produced = 0

    async def fast() -> AsyncGenerator[list[int], None]:
        nonlocal produced
        for i in range(HIGH_WATER * 3):
            produced += 1
            yield [i]

    stream = Batches(fast())
    first = await anext(stream)
    await asyncio.sleep(0.01)
    assert produced <= len(first) + HIGH_WATER
    rest = [x async for batch in stream for x in batch]
    assert first + rest == list(range(HIGH_WATER * 3))


def test_runs_of_text_and_tool_fragments_merge() -> None:
    batch = [
        TextDelta("Hel"),
        TextDelta("lo"),
        ToolCallDelta(0, "call_1", "lookup", '{"q": '),
        ToolCallDelta(0, "", "", '"x"}'),
        ToolCallDelta(1, "call_2", "other", "{}"),
        TextDelta("!"),
    ]
    events = list(delta_events(batch))
    assert [e.delta.text for e in events] == ["Hello", "", "", "!"]
    call = events[1].delta.tool_call
    assert (call.index, call.id, call.name, call.arguments_fragment) == (
        0,
        "call_1",
        "lookup",
        '{"q": "x"}',
    )
    assert events[2].delta.tool_call.id == "call_2"
