"""The cost record: what one call was, decided, used and cost.

The pipeline builds one `CallRecord` when a call ends, however it ends, and hands it to every
`CallObserver` (call log, statistics, metrics). Observers must not block: they enqueue and
return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from router_service.cost import Usage
from router_service.fallback import AttemptRecord
from router_service.policy import Decision

__all__ = ["CallObserver", "CallRecord", "CallStatus"]


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


@dataclass(frozen=True, slots=True)
class CallRecord:
    request_id: str
    # Unix time the call started.
    started_at: float
    app: str
    decision: Decision
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


class CallObserver(Protocol):
    def observe(self, record: CallRecord) -> None:
        """Take note of a finished call without blocking."""
        ...
