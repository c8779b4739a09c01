"""The router's one error hierarchy.

Provider adapters translate transport and HTTP failures into `ProviderError`s in one place
(`providers.errors`); the gRPC layer translates `RouterError`s into status codes in one table
(`api.status`). Nothing else catches broadly. Messages are safe to show to callers: they never
contain secrets or prompt text.

    RouterError
    ├── InvalidRequest           the request is malformed or too large
    ├── Unauthenticated          no or unknown app credential
    ├── PermissionDenied         a credential without the right (e.g. admin RPCs)
    ├── NotFound                 e.g. feedback for an unknown request id
    ├── QuotaExceeded            a limit refuses the request (carries the violated quota)
    │   ├── BudgetExhausted      the app's monthly hard limit
    │   └── RateLimited          requests or tokens per minute
    ├── StoreUnavailable         Redis is unreachable and the policy is fail-closed
    ├── ProviderError            one provider call failed (knows whether a retry may help)
    │   ├── ProviderConnectError
    │   ├── ProviderTimeout
    │   ├── ProviderRateLimited  429; carries Retry-After
    │   ├── ProviderServerError  5xx
    │   ├── ProviderRejected     4xx other than 429: auth, validation; never retried
    │   │   ├── ProviderRequestInvalid   the request itself is invalid: no other candidate is tried
    │   │   └── ProviderContextExceeded  the prompt does not fit this model: a larger one may fit
    │   └── ProviderStreamBroken the stream ended before the answer was complete
    ├── AllProvidersFailed       every candidate failed before its first token
    └── ArtifactRejected         a classifier artifact failed its checks (the old one serves)
"""

from __future__ import annotations

__all__ = [
    "AllProvidersFailed",
    "ArtifactRejected",
    "BudgetExhausted",
    "InternalError",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "ProviderConnectError",
    "ProviderContextExceeded",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderRejected",
    "ProviderRequestInvalid",
    "ProviderServerError",
    "ProviderStreamBroken",
    "ProviderTimeout",
    "QuotaExceeded",
    "RateLimited",
    "RouterError",
    "StoreUnavailable",
    "Unauthenticated",
]


class RouterError(Exception):
    """Base of every error the router raises on purpose. `message` goes to logs, spans and the
    call log; `caller_message` (default: the same) is what the caller's gRPC status says, and
    may add what only the caller may see (an upstream's words about the caller's own request).
    """

    retryable: bool = False

    def __init__(self, message: str, *, caller_message: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.caller_message = caller_message or message


class InvalidRequest(RouterError):
    pass


class Unauthenticated(RouterError):
    pass


class PermissionDenied(RouterError):
    pass


class NotFound(RouterError):
    pass


class QuotaExceeded(RouterError):
    """A quota refuses the request; `subject` and `description` fill the QuotaFailure detail."""

    def __init__(self, message: str, *, subject: str, description: str) -> None:
        super().__init__(message)
        self.subject = subject
        self.description = description


class BudgetExhausted(QuotaExceeded):
    pass


class RateLimited(QuotaExceeded):
    pass


class StoreUnavailable(RouterError):
    pass


class ProviderError(RouterError):
    """One provider call failed. `retryable`: another attempt (here or elsewhere) may succeed."""

    def __init__(
        self, message: str, *, provider: str, status: int | None = None, upstream_detail: str = ""
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        # The upstream's own words (scrubbed of keys): may quote the prompt, so never logged,
        # traced or recorded; shown only to the caller of a request the upstream refused.
        self.upstream_detail = upstream_detail


class ProviderConnectError(ProviderError):
    retryable = True


class ProviderTimeout(ProviderError):
    retryable = True


class ProviderRateLimited(ProviderError):
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = 429,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after_s = retry_after_s


class ProviderServerError(ProviderError):
    retryable = True


class ProviderRejected(ProviderError):
    retryable = False


class ProviderRequestInvalid(ProviderRejected):
    """The provider found the request itself invalid (400, 413, 422): every candidate would."""


class ProviderContextExceeded(ProviderRejected):
    """The prompt is longer than this model's context window, by the provider's own count."""


class ProviderStreamBroken(ProviderError):
    retryable = True


class AllProvidersFailed(RouterError):
    pass


class ArtifactRejected(RouterError):
    pass


class InternalError(RouterError):
    """A failure the router did not expect (a bug): the caller learns only that it happened;
    the details are logged."""
