"""Hands a stream's items on in batches: everything that arrived while the last batch was sent.

A gRPC message costs a system call and a trip through gRPC's write path (tens of microseconds
here), so sending one message per token would dominate the gateway's CPU. Upstreams often
deliver several tokens per network read, and the source yields those of one read together; the
producer task below drains the source until it would wait for the network, while the consumer
sends what has gathered as one message. Nothing waits on purpose: the first token goes out as
soon as it is there, and under a slow upstream every token still goes out alone.

The producer starts when the `Batches` is made, not when it is first read, so the source's
first request (the upstream call) leaves at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["HIGH_WATER", "Batches"]

T = TypeVar("T")

# The producer pauses when this many items wait for a slow consumer (a caller reading slowly);
# the upstream then waits too, instead of its answer piling up in memory.
HIGH_WATER = 512


class Batches(Generic[T]):
    """The items of `source` (which yields them in non-empty sequences), in order, grouped as
    they were ready. An exception of `source` is raised after the items that came before it;
    `aclose` (or leaving `async with`) cancels and closes `source` if it has not finished."""

    def __init__(
        self,
        source: AsyncGenerator[Sequence[T], None],
        *,
        tracker: set[asyncio.Task[None]] | None = None,
    ) -> None:
        self._items: list[T] = []
        self._error: BaseException | None = None
        self._finished = False
        self._wake_consumer: asyncio.Future[None] | None = None
        self._wake_producer: asyncio.Future[None] | None = None
        self._producer = asyncio.get_running_loop().create_task(self._run(source), name="batches")
        if tracker is not None:
            # Whoever shuts down can wait for the producer's cleanup (costing and recording a
            # call the shutdown cut off) before closing what that cleanup uses.
            tracker.add(self._producer)
            self._producer.add_done_callback(tracker.discard)

    def _notify(self) -> None:
        waiter = self._wake_consumer
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _run(self, source: AsyncGenerator[Sequence[T], None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for ready in source:
                items = self._items
                items += ready
                if len(items) == len(ready):
                    # The start of a batch: let the consumer send it before the source is read
                    # on. A read already received would otherwise be parsed without a pause
                    # (no wait for the network in between) while these wait.
                    self._notify()
                    await asyncio.sleep(0)
                elif len(items) >= HIGH_WATER:
                    self._wake_producer = loop.create_future()
                    await self._wake_producer
        except BaseException as exc:
            # Handed to the consumer, who raises it after the items before it.
            self._error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            await source.aclose()
            self._finished = True
            self._notify()

    def __aiter__(self) -> Batches[T]:
        return self

    async def __anext__(self) -> list[T]:
        if not self._items and not self._finished:
            self._wake_consumer = asyncio.get_running_loop().create_future()
            await self._wake_consumer
            self._wake_consumer = None
        items, self._items = self._items, []
        producer = self._wake_producer
        if producer is not None and not producer.done():
            producer.set_result(None)
        if items:
            return items
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if not self._producer.done():
            self._producer.cancel()
        await asyncio.gather(self._producer, return_exceptions=True)

    async def __aenter__(self) -> Batches[T]:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
