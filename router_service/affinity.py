"""Cache affinity: requests with the same prompt prefix go to the same warm deployment.

Provider prefix caches are per deployment, so a prefix served alternately by two deployments of
a model is cold half the time. Rendezvous (highest-random-weight) hashing ranks a model's
deployments by a hash of (prefix hash, deployment): every replica computes the same order with
no shared state, a prefix always lands on the same deployment while it is healthy, and when one
deployment goes away only the prefixes it served move (to their second choice).

Which models already hold a prefix warm is remembered in the store for the provider cache's
lifetime, so the policy can prefer a warm model over an equally suitable cold one.

Only prefixes long enough to be cached get affinity. Pinning a short one (a one-line system
prompt shared by all of an app's requests) would gain nothing and pile the app's whole traffic
onto one deployment; such requests are spread by their request id instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence, Set
from typing import TypeVar

from router_service.prefix import CanonicalRequest
from router_service.store import Store

__all__ = ["MIN_CACHEABLE_PREFIX_TOKENS", "PrefixWarmth", "affinity_key", "rendezvous_order"]

T = TypeVar("T")

# The shortest prefix providers cache (OpenAI's automatic cache; Anthropic's larger models).
MIN_CACHEABLE_PREFIX_TOKENS = 1024


def affinity_key(canonical: CanonicalRequest) -> str:
    """What a request's deployments are ranked by: its prefix when the prefix can be cached,
    else its request id, which spreads load evenly."""
    if canonical.prefix_hash and canonical.prefix_tokens >= MIN_CACHEABLE_PREFIX_TOKENS:
        return canonical.prefix_hash
    return canonical.request.request_id


def _weight(prefix_hash: str, name: str) -> int:
    digest = hashlib.blake2b(f"{prefix_hash}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest)


def rendezvous_order(
    prefix_hash: str,
    items: Sequence[T],
    name: Callable[[T], str],
    unhealthy: Set[str] = frozenset(),
) -> list[T]:
    """`items` ranked for `prefix_hash`: healthy ones first, each group by rendezvous weight.

    Without a prefix there is nothing to keep warm, and the configured order stands.
    """
    if not prefix_hash or len(items) < 2:
        return list(items)
    return sorted(
        items, key=lambda item: (name(item) in unhealthy, -_weight(prefix_hash, name(item)))
    )


class PrefixWarmth:
    """Which models hold an app's prompt prefix warm in their provider's cache."""

    def __init__(self, store: Store, *, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s

    async def warm_models(self, app: str, prefix_hash: str) -> frozenset[str]:
        if not prefix_hash:
            return frozenset()
        return await self._store.warm_models(app, prefix_hash)

    async def mark_warm(self, app: str, prefix_hash: str, model: str) -> None:
        if prefix_hash:
            await self._store.mark_warm(app, prefix_hash, model, self._ttl_s)
