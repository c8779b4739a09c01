"""Waiting in tests for what happens on its own clock (background retries, streams)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def eventually(check: Callable[[], bool | Awaitable[bool]], *, within_s: float = 5.0) -> None:
    """Wait until `check()` (awaited when it returns an awaitable) is true; fail after
    `within_s`."""
    for _ in range(int(within_s / 0.02)):
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")
