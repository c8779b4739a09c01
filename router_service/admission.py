"""Admitting a call: its rate-limit take and its budget hold, in one store round trip.

`Pipeline.route` starts a call's admission the moment the request arrives, so the round trip
overlaps the classification instead of following the decision. The hold is then sized before
the decision exists: it is the dearest worst case over every model the decision could name
(`policy.reachable`), so it is never less than the decided call's own worst case (the
`Plan.hold_micro_usd` that `budgets` explains). Once the decision is made, `Admission.hold_for`
settles the difference:

- the hold at the bound was granted and covers the decided worst case: the call keeps it, and
  its settle releases all it did not cost (a cached replay releases it at once). When what it
  holds beyond the worst case is a noticeable share of what the budget has left (1% or more,
  as the admission's reply told), it is lowered to the worst case at once, in the background:
  near the limit a call holds no more than it may cost (as when the hold followed the
  decision), and far from it the extra round trip is not spent;
- it was granted but falls short of the decided worst case (a bound that is wrong; logged as an
  error): it is given back and the decided worst case reserved instead;
- the bound was refused for budget: the store took nothing (neither the rate allowance nor any
  budget), so the admission is sent again at the decided worst case. A call that fits its own
  worst case is never refused because of the bound; a refusal then is the one the call would
  have met without it;
- a rate-limit refusal is final: it does not depend on the amount.

Apps without rate limits send the budget reserve alone. `abandon` gives back what an admission
took (the rate allowance and the hold) for a call that goes no further, whenever the store's
answer arrives; the caller never waits for it.
"""

from __future__ import annotations

import asyncio
import logging

from router_service.auth import App
from router_service.budgets import BudgetLedger, Hold
from router_service.errors import BudgetExhausted
from router_service.ratelimit import RateLimiter
from router_service.store import Store

__all__ = ["Admission", "Admissions"]

log = logging.getLogger(__name__)

# A hold at the bound is lowered to the decided worst case when the excess is at least this
# share of the budget's headroom: below it, the excess can change no other call's admission
# unless the budget runs within a hundred such calls of its limit while this one runs.
_SHRINK_SHARE = 0.01


class Admissions:
    """Starts admissions; one per process, shared by every request."""

    def __init__(self, store: Store, budgets: BudgetLedger, rate_limits: RateLimiter) -> None:
        self._store = store
        self._budgets = budgets
        self._rate_limits = rate_limits
        # Admissions under way and holds being given back: strong references until they end.
        self._tasks: set[asyncio.Task[Hold] | asyncio.Task[None]] = set()

    def begin(self, app: App, prompt_tokens: int, amount_micro_usd: int) -> Admission:
        """Send the admission of a call estimated at `prompt_tokens` holding `amount` (its
        worst case, or an upper bound of it); the answer is awaited with `hold_for`."""
        return Admission(self, app, prompt_tokens, amount_micro_usd)

    # What an `Admission` asks of its maker.

    def send(self, app: App, prompt_tokens: int, amount_micro_usd: int) -> asyncio.Task[Hold]:
        """The admission's round trip, as a task of its own (it runs whether or not the caller
        still waits)."""
        task = asyncio.get_running_loop().create_task(
            self._admit(app, prompt_tokens, amount_micro_usd), name="admission"
        )
        self._track(task)
        return task

    def _track(self, task: asyncio.Task[Hold] | asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit(self, app: App, prompt_tokens: int, amount_micro_usd: int) -> Hold:
        """The hold, with the rate allowance taken; or `BudgetExhausted`, `RateLimited`,
        `StoreUnavailable`, and nothing taken."""
        budgets = self._budgets
        take = self._rate_limits.take_for(app, prompt_tokens)
        if take is None:
            return await budgets.reserve(app, amount_micro_usd)
        hold = budgets.prepare(app, amount_micro_usd)
        store = self._store
        result = await budgets.ask(
            hold, lambda request: store.admit(hold.app, hold.period, request, take)
        )
        # Refused by both: the budget says so, as when the two were checked apart.
        if not result.fits:
            raise budgets.exhausted(hold, result.usage)
        if not result.rate.allowed:
            raise self._rate_limits.refused(app, result.rate)
        return budgets.keep(hold)

    def fit(self, hold: Hold, worst_case_micro_usd: int) -> None:
        """Lower `hold` to `worst_case` in the background when its excess is a noticeable share
        of what the app's budget has left."""
        excess = hold.amount_micro_usd - worst_case_micro_usd
        if excess <= 0:
            return
        headroom = self._budgets.headroom(hold.app)
        if headroom is None or excess < headroom * _SHRINK_SHARE:
            return
        task = asyncio.get_running_loop().create_task(
            self._budgets.shrink(hold, worst_case_micro_usd), name="admission-shrink"
        )
        self._track(task)

    def release(self, hold: Hold) -> asyncio.Task[None]:
        """Give a hold back whole, in the background."""

        async def release() -> None:
            await self._budgets.settle(hold, 0)

        task = asyncio.get_running_loop().create_task(release(), name="admission-release")
        self._track(task)
        return task

    async def reserve(self, app: App, amount_micro_usd: int) -> Hold:
        """A budget hold alone (the rate allowance already taken)."""
        return await self._budgets.reserve(app, amount_micro_usd)

    def give_back(self, app: App, prompt_tokens: int, holds: list[Hold]) -> None:
        """Return an admission's rate allowance and its holds, in the background."""
        if self._rate_limits.take_for(app, prompt_tokens) is not None:
            self._rate_limits.refund(app, prompt_tokens)
        for hold in holds:
            self.release(hold)

    async def drain(self) -> None:
        """Wait for the admissions under way and the holds being given back."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))


class Admission:
    """One call's admission, sent when it began; `hold_for` once its worst case is known."""

    def __init__(
        self, admissions: Admissions, app: App, prompt_tokens: int, amount_micro_usd: int
    ) -> None:
        self._admissions = admissions
        self._app = app
        self._prompt_tokens = prompt_tokens
        self._amount = amount_micro_usd
        self._task = admissions.send(app, prompt_tokens, amount_micro_usd)
        # A hold reserved in place of one that fell short of the decided worst case.
        self._replacement: Hold | None = None
        self._abandoned = False

    async def hold_for(self, worst_case_micro_usd: int) -> Hold:
        """The call's hold, covering `worst_case` (its decided worst case); raises
        `BudgetExhausted` or `RateLimited` (nothing taken) or `StoreUnavailable`."""
        try:
            hold = await asyncio.shield(self._task)
        except BudgetExhausted:
            if worst_case_micro_usd >= self._amount:
                raise
            # Refused at the bound, and nothing taken: ask again for what the call may cost.
            self._amount = worst_case_micro_usd
            self._task = self._admissions.send(self._app, self._prompt_tokens, worst_case_micro_usd)
            hold = await asyncio.shield(self._task)
        if hold.amount_micro_usd >= worst_case_micro_usd:
            self._admissions.fit(hold, worst_case_micro_usd)
            return hold
        log.error(
            "app %s: the hold taken at arrival (%d micro-USD) is below the decided worst case "
            "(%d); reserving that instead",
            self._app.name,
            hold.amount_micro_usd,
            worst_case_micro_usd,
        )
        # Given back first, so the reserve meets the budget as it would have without it.
        await asyncio.shield(self._admissions.release(hold))
        replacement = await self._admissions.reserve(self._app, worst_case_micro_usd)
        self._replacement = replacement
        return replacement

    def abandon(self) -> None:
        """Give back what the admission took, for a call that goes no further: the rate
        allowance and the hold (once the store has answered; in the background)."""
        if self._abandoned:
            return
        self._abandoned = True

        def done(task: asyncio.Task[Hold]) -> None:
            if task.cancelled() or task.exception() is not None:
                return  # refused, or cancelled at shutdown: nothing taken, or released later
            holds = [task.result()]
            if self._replacement is not None:
                holds.append(self._replacement)
            self._admissions.give_back(self._app, self._prompt_tokens, holds)

        self._task.add_done_callback(done)
