"""Many concurrent reserve/settle calls against one budget, from several clients."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from router_service.auth import App
from router_service.budgets import BudgetLedger
from router_service.errors import BudgetExhausted


@dataclass
class LoadResult:
    granted: int
    refused: int
    settled_micro_usd: int


async def concurrent_calls(
    ledgers: list[BudgetLedger], app: App, calls: int, seed: int = 7, per_client: int = 0
) -> LoadResult:
    """`calls` calls spread over `ledgers` (one per client), each holding a random worst case
    and settling a random actual cost no larger than it, after a short random pause.
    `per_client` > 0 bounds each client's calls in flight."""
    rng = random.Random(seed)
    plans = [(rng.randrange(1_000, 40_000), rng.random(), rng.random() / 100) for _ in range(calls)]
    result = LoadResult(0, 0, 0)
    limits = [asyncio.Semaphore(per_client or calls) for _ in ledgers]

    async def one(i: int) -> None:
        async with limits[i % len(ledgers)]:
            await call(i)

    async def call(i: int) -> None:
        worst, share, pause = plans[i]
        ledger = ledgers[i % len(ledgers)]
        try:
            hold = await ledger.reserve(app, worst)
        except BudgetExhausted:
            result.refused += 1
            return
        result.granted += 1
        await asyncio.sleep(pause)
        actual = int(worst * share)
        result.settled_micro_usd += actual
        await ledger.settle(hold, actual)

    await asyncio.gather(*(one(i) for i in range(calls)))
    return result
