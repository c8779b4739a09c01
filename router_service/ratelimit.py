"""Per-app rate limits: requests per minute and tokens per minute, shared by every replica.

Each limit is a token bucket holding at most one minute's allowance and refilling evenly
(`limit / 60` per second). Chosen over the alternatives because a fixed window lets through
twice the limit across a window boundary, and a sliding log needs memory per request; a bucket
is three numbers per app, one script call per request, and smooth.

Tokens: at admission the prompt's estimated tokens are taken, and a request is refused when the
bucket lacks them. Output tokens are known only after the call, so they are taken afterwards
whatever the bucket holds (with the budget settle, in the same round trip): a burst of long
answers pushes it into debt (at most one minute's allowance) and the following requests wait
until it has refilled.

On the request path the take goes to the store together with the budget hold (`admission`);
this module says what to take and words the refusal. A request admitted but then refused or
failed before it reached a provider (an invalid hint) gives back what its admission took
(`refund`): only work done counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

from router_service.auth import App
from router_service.errors import RateLimited, StoreUnavailable
from router_service.store import RateDecision, RateTake, Store, TokenCharge

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._refunds: set[asyncio.Task[None]] = set()

    async def admit(self, app: App, prompt_tokens: int) -> None:
        """Take one request and the prompt's tokens, or raise `RateLimited` (nothing taken)."""
        take = self.take_for(app, prompt_tokens)
        if take is None:
            return
        decision = await self._store.take(
            app.name,
            requests_per_minute=take.requests_per_minute,
            tokens_per_minute=take.tokens_per_minute,
            requests=take.requests,
            tokens=take.tokens,
        )
        if not decision.allowed:
            raise self.refused(app, decision)

    def refused(self, app: App, decision: RateDecision) -> RateLimited:
        """The error for a take the store refused."""
        limits = app.config.rate_limits
        per_minute = (
            limits.requests_per_minute
            if decision.limited_by == "requests"
            else limits.tokens_per_minute
        )
        return RateLimited(
            f"app {app.name} is over its limit of {per_minute} {decision.limited_by} per minute; "
            f"retry in {math.ceil(decision.retry_after_s)} s",
            subject=f"app:{app.name}",
            description=f"{decision.limited_by} per minute: {per_minute}",
        )

    def take_for(self, app: App, prompt_tokens: int) -> RateTake | None:
        """What admitting one request takes from the app's buckets; None when it has no
        limits (nothing to take)."""
        limits = app.config.rate_limits
        rpm, tpm = limits.requests_per_minute or 0, limits.tokens_per_minute or 0
        if not rpm and not tpm:
            return None
        return RateTake(rpm, tpm, 1, prompt_tokens)

    def refund(self, app: App, prompt_tokens: int) -> None:
        """Return the request and prompt tokens an admission took, for a request that went no
        further; in the background, never raises."""
        refund = asyncio.get_running_loop().create_task(
            self._refund(app, prompt_tokens), name="rate-limit-refund"
        )
        self._refunds.add(refund)
        refund.add_done_callback(self._refunds.discard)

    async def _refund(self, app: App, prompt_tokens: int) -> None:
        limits = app.config.rate_limits
        # When the store is away the bucket refills by itself within a minute.
        with contextlib.suppress(StoreUnavailable):
            await self._store.take(
                app.name,
                requests_per_minute=limits.requests_per_minute or 0,
                tokens_per_minute=limits.tokens_per_minute or 0,
                requests=-1,
                tokens=-prompt_tokens,
                force=True,
            )

    async def drain(self) -> None:
        """Wait for the refunds under way."""
        while self._refunds:
            await asyncio.wait(list(self._refunds))

    def output_charge(self, app: App, output_tokens: int) -> TokenCharge | None:
        """What the answer's tokens take from the token bucket; None when nothing."""
        tpm = app.config.rate_limits.tokens_per_minute
        if not tpm or output_tokens <= 0:
            return None
        return TokenCharge(tokens_per_minute=tpm, tokens=output_tokens)

    async def charge_output(self, app: App, output_tokens: int) -> None:
        """Take the answer's tokens from the token bucket, into debt if need be."""
        charge = self.output_charge(app, output_tokens)
        if charge is None:
            return
        await self._store.take(
            app.name,
            requests_per_minute=0,
            tokens_per_minute=charge.tokens_per_minute,
            requests=0,
            tokens=charge.tokens,
            force=True,
        )
