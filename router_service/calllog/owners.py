"""Which app made which request: the check behind "an app may only give feedback on its own
requests".

Every replica remembers the requests it served (a bounded, oldest-first-evicted set of 64-bit
digests of app and request id, about 70 bytes each, so 100,000 take some 7 MB); with Redis
the call-log sink also writes one key per call, `<stream>:owner:<len(app)>:<app>:<request id>`,
that expires after the feedback window, so feedback reaches any replica. The app is part of the
key: apps choose their own request ids, and one app reusing another's id must neither take over
nor block the other's feedback. (Memory: about 100 bytes per call within the window, e.g.
300 MB for a million calls a day and a three-day window; shorten `call_log.feedback_window_s`
for more traffic.)
"""

from __future__ import annotations

import hashlib

from redis.exceptions import RedisError

from router_service.errors import StoreUnavailable
from router_service.store.redis import RedisClient

__all__ = ["RequestOwners", "owner_key"]


def owner_key(stream: str, app: str, request_id: str) -> str:
    # The app's length makes the key unambiguous whatever characters app names contain.
    return f"{stream}:owner:{len(app)}:{app}:{request_id}"


class RequestOwners:
    def __init__(
        self, capacity: int, *, redis: RedisClient | None = None, stream: str = ""
    ) -> None:
        self._capacity = capacity
        # Digest -> None, oldest first (dicts keep insertion order).
        self._recent: dict[int, None] = {}
        self._redis = redis
        self._stream = stream

    def remember(self, app: str, request_id: str) -> None:
        """Note that `app` made `request_id` (on the request path: O(1), no I/O)."""
        recent = self._recent
        recent[_digest(app, request_id)] = None
        if len(recent) > self._capacity:
            del recent[next(iter(recent))]

    async def owns(self, app: str, request_id: str) -> bool:
        if _digest(app, request_id) in self._recent:
            return True
        if self._redis is None:
            return False
        try:
            found = await self._redis.exists(owner_key(self._stream, app, request_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(
                f"cannot check the request's owner: Redis is unavailable ({type(exc).__name__})"
            ) from exc
        return bool(found)


def _digest(app: str, request_id: str) -> int:
    # 64 bits: two different calls share a digest about once in 10**19 checks.
    data = f"{len(app)}:{app}:{request_id}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest())
