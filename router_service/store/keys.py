"""Every Redis key the store writes, in one place: who owns it and how long it lives.

Keys read `<prefix>:{<app>}:<what>[:<qualifier>]`. The app in braces is the Redis Cluster hash
tag, so all of one app's keys sit in one slot and a Lua script may touch several of them.

| key                               | owner             | expires                         |
|-----------------------------------|-------------------|---------------------------------|
| `{app}:budget:YYYY-MM` (hash)     | budget scripts    | ~5 weeks after the month ends   |
| `{app}:leases:YYYY-MM` (zset)     | budget scripts    | with the budget hash            |
| `{app}:budget_limit` (hash)       | Admin.SetBudget   | never (it is configuration)     |
| `{app}:rate` (hash)               | rate-limit script | 2 minutes idle (refilled by then)|
| `{app}:response:<sha256>`         | response cache    | the configured TTL              |
| `{app}:warm:<prefix sha256>`      | cache affinity    | the prefix-warm TTL             |
| `{app}:stats:YYYY-MM` (hash)      | statistics        | ~13 months after the month      |
"""

from __future__ import annotations

import re

__all__ = ["Keys"]

_SAFE_TAG = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _tag(app: str) -> str:
    # Braces in an app name would move the hash tag; such names are hex-encoded instead.
    return app if _SAFE_TAG.fullmatch(app) else "x" + app.encode().hex()


class Keys:
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def app(self, app: str) -> str:
        """The part every key of `app` starts with, hash tag included."""
        return f"{self._prefix}:{{{_tag(app)}}}"

    def budget(self, app: str, period: str) -> str:
        return f"{self.app(app)}:budget:{period}"

    def leases(self, app: str, period: str) -> str:
        return f"{self.app(app)}:leases:{period}"

    def budget_limit(self, app: str) -> str:
        return f"{self.app(app)}:budget_limit"

    def rate(self, app: str) -> str:
        return f"{self.app(app)}:rate"

    def response(self, app: str, key: str) -> str:
        return f"{self.app(app)}:response:{key}"

    def warm(self, app: str, prefix_hash: str) -> str:
        return f"{self.app(app)}:warm:{prefix_hash}"

    def stats(self, app: str, period: str) -> str:
        return f"{self.app(app)}:stats:{period}"
