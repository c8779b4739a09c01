"""The cost record: what one call was, decided, used and cost.

The pipeline builds one `CallRecord` when a call ends, however it ends, and hands it to every
`CallObserver` (call log, statistics, metrics). Observers must not block: they enqueue and
return. A `Route` call of a known app that the router refuses as invalid before deciding
anything (`invalid_call`) is recorded too, with no decision.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from router_service.cost import Usage
from router_service.fallback import AttemptOutcome, AttemptRecord
from router_service.policy import Decision

__all__ = ["CallObserver", "CallRecord", "CallStatus", "invalid_call", "unserved_call"]


class CallStatus:
    OK = "ok"
    # The caller went away before the answer was complete.
    CANCELLED = "cancelled"
    # A limit refused the call before any provider was called.
    REFUSED = "refused"
    # Every candidate failed before its first token.
    FAILED = "failed"
    # A provider refused the request itself as invalid (INVALID_ARGUMENT).
    REJECTED = "rejected"
    # The answer began streaming and then broke.
    BROKEN = "broken"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    # The router's own checks refused the request (INVALID_ARGUMENT) before anything was
    # decided: the record has no decision, and nothing was charged.
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class CallRecord:
    request_id: str
    # Unix time the call started.
    started_at: float
    app: str
    # None only for a call refused as invalid before a decision (`CallStatus.INVALID`).
    decision: Decision | None
    usage: Usage
    cost_micro_usd: int
    ttft_ms: float | None
    latency_ms: float
    served_from_cache: bool
    attempts: tuple[AttemptRecord, ...]
    status: str
    error: str
    # The model and provider that served the answer, if any did.
    model: str
    provider: str
    finish_reason: str
    # Prompt text, only for apps that opted in to training data.
    prompt: tuple[tuple[str, str], ...] | None
    metadata: Mapping[str, str]
    # The model that answered, as the provider named it (may differ from `model`).
    response_model: str = ""
    # What the gateway itself added to the time to first token: from the request's arrival to
    # the first upstream request, plus from the first upstream chunk to its hand-off to gRPC.
    # None when no upstream chunk arrived.
    overhead_ms: float | None = None

    @property
    def prompt_cache_hit(self) -> bool:
        return self.usage.cached_input_tokens > 0

    @property
    def last_request(self) -> AttemptRecord | None:
        """The last attempt that sent a request to a provider (the serving one, when a provider
        answered); None when the call sent none."""
        for attempt in reversed(self.attempts):
            if attempt.outcome is not AttemptOutcome.SKIPPED:
                return attempt
        return None


def unserved_call(
    app: str,
    request_id: str,
    decision: Decision | None,
    status: str,
    error: str,
    *,
    prompt: tuple[tuple[str, str], ...] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> CallRecord:
    """The record of a call refused before any provider was called: nothing used or charged."""
    return CallRecord(
        request_id=request_id,
        started_at=time.time(),
        app=app,
        decision=decision,
        usage=Usage(),
        cost_micro_usd=0,
        ttft_ms=None,
        latency_ms=0.0,
        served_from_cache=False,
        attempts=(),
        status=status,
        error=error,
        model="",
        provider="",
        finish_reason=status,
        prompt=prompt,
        metadata=metadata or {},
    )


def invalid_call(app: str, request_id: str, error: str) -> CallRecord:
    """The record of a `Route` call of `app` refused as invalid before any decision: its
    request id when the request carried a valid one (else empty), and the refusal's message,
    which never holds prompt text or secrets (`errors.RouterError`). No prompt text or metadata
    is kept: the request was not valid, and no outcome can come of it."""
    return unserved_call(app, request_id, None, CallStatus.INVALID, error)


class CallObserver(Protocol):
    def observe(self, record: CallRecord) -> None:
        """Take note of a finished call without blocking."""
        ...
