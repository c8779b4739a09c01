"""Hands a stream's items on in batches: everything that arrived while the last batch was sent.

A gRPC message costs a system call and a trip through gRPC's write path (tens of microseconds
here), so sending one message per token would dominate the gateway's CPU. Upstreams often
deliver several tokens per network read; the producer task below drains the source until it
would wait for the network, while the consumer sends what has gathered as one message. Nothing
waits on purpose: the first token goes out as soon as it is there, and under a slow upstream
every token still goes out alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

__all__ = ["batches"]

T = TypeVar("T")

# The producer pauses when this many items wait for a slow consumer (a caller reading slowly);
# the upstream then waits too, instead of its answer piling up in memory.
HIGH_WATER = 512


class _Pump(Generic[T]):
    def __init__(self) -> None:
        self.items: list[T] = []
        self.error: BaseException | None = None
        self.finished = False
        self._wake_consumer: asyncio.Future[None] | None = None
        self._wake_producer: asyncio.Future[None] | None = None

    def _notify(self) -> None:
        waiter = self._wake_consumer
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, source: AsyncGenerator[T, None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for item in source:
                self.items.append(item)
                self._notify()
                if len(self.items) >= HIGH_WATER:
                    self._wake_producer = loop.create_future()
                    await self._wake_producer
        except BaseException as exc:
            # Handed to the consumer, who raises it after the items before it.
            self.error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            await source.aclose()
            self.finished = True
            self._notify()

    async def take(self) -> list[T]:
        """The items gathered so far, waiting for at least one unless the source has ended."""
        if not self.items and not self.finished:
            self._wake_consumer = asyncio.get_running_loop().create_future()
            await self._wake_consumer
            self._wake_consumer = None
        items, self.items = self.items, []
        producer = self._wake_producer
        if producer is not None and not producer.done():
            producer.set_result(None)
        return items


async def batches(source: AsyncGenerator[T, None]) -> AsyncGenerator[list[T], None]:
    """The items of `source`, in order, grouped as they were ready. An exception of `source`
    is raised after the items that came before it; closing this generator (the caller went
    away) cancels and closes `source`."""
    pump: _Pump[T] = _Pump()
    producer = asyncio.get_running_loop().create_task(pump.run(source), name="batches")
    try:
        while True:
            items = await pump.take()
            if items:
                yield items
            elif pump.finished:
                break
        if pump.error is not None:
            raise pump.error
    finally:
        if not producer.done():
            producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
