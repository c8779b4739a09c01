"""Provider failures translated into the router's errors, in this one place.

Adapters catch httpx exceptions, read error statuses and error events, and hand them to their
`ErrorMapper`, which returns the `errors.Provider*` to raise (`raise mapper.x(...) from exc`):

    httpx.ConnectError, ConnectTimeout, PoolTimeout  ProviderConnectError
    httpx network/protocol error, before a response  ProviderConnectError
    httpx network/protocol error, mid-stream         ProviderStreamBroken
    our first-token, idle and total deadlines        ProviderTimeout
    HTTP 408, 504                                    ProviderTimeout
    HTTP 429                                         ProviderRateLimited (with Retry-After)
    HTTP 5xx, 529 (overloaded)                       ProviderServerError
    HTTP 400/413/422 saying the prompt is too long   ProviderContextExceeded
    HTTP 400, 413, 422                               ProviderRequestInvalid
    HTTP 401, 403, 404, other 4xx                    ProviderRejected
    a body that is not SSE/JSON, or stops early      ProviderStreamBroken

Error events inside a stream (Anthropic's `error`, an OpenAI-style `{"error": ...}` chunk) are
mapped through the status their type stands for. What the fallback logic does with each class
is described in `router_service.fallback`.

Every message is safe to log, trace and record: it names the provider, the status and the
upstream's error code (`context_length_exceeded`, `overloaded_error`, ...), never the upstream's
free-text message, which may quote the prompt or a credential. That text, scrubbed of the
provider's key (and anything shaped like one) and cut to a few hundred characters, is logged at
DEBUG only, and a request the upstream refused as invalid carries it as `upstream_detail` for
its caller alone (it is about the caller's own request). Transport failures name the network
error, scrubbed the same way.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from router_service.errors import (
    ProviderConnectError,
    ProviderContextExceeded,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderRequestInvalid,
    ProviderServerError,
    ProviderStreamBroken,
    ProviderTimeout,
)

__all__ = ["ErrorMapper", "UpstreamErrorEvent", "parse_retry_after"]

log = logging.getLogger(__name__)

_MAX_UPSTREAM_TEXT = 300
REDACTED = "[redacted]"
# Key-shaped tokens are scrubbed even when they are not this provider's key (an upstream may
# echo another credential, or a partially masked one).
_KEY_SHAPED = re.compile(
    r"(?i)\b(?:sk|pk|rk|sess|key)-[A-Za-z0-9_\-]{6,}|\bBearer\s+[^\s\"',;]+|\b[A-Za-z0-9_\-]{40,}"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# An upstream error code is shown only when it looks like one: an identifier, not prose.
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_CONTEXT_OVERFLOW = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "prompt is too long",
    "exceed context limit",
)
# What an error event's type means, as the HTTP status the same error would have had.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class UpstreamErrorEvent(Exception):
    """A parser found an error object where the answer should be (`type` as the API names
    it, e.g. `overloaded_error`); `ErrorMapper.error_event` turns it into a router error."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(error_type, message)
        self.error_type = error_type
        self.message = message


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait, from `retry-after-ms` (OpenAI) or `retry-after` (seconds or an HTTP
    date); None when neither says."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _upstream_text(body: bytes) -> tuple[str, str]:
    """The upstream's error message and code from an error body, whichever format it uses."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return body[: _MAX_UPSTREAM_TEXT * 2].decode("utf-8", "replace"), ""
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or ""
            code = error.get("code") or error.get("type") or ""
            return str(message), str(code)
        if isinstance(error, str):
            return error, ""
    return body[: _MAX_UPSTREAM_TEXT * 2].decode("utf-8", "replace"), ""


class ErrorMapper:
    """Builds the router error for one provider's failures; knows its key only to hide it."""

    def __init__(
        self, provider: str, secret: str | None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.provider = provider
        self._secret = secret or None
        self._clock = clock

    def scrub(self, text: str) -> str:
        """`text` made safe to show: no key, no control characters, not too long."""
        if self._secret is not None:
            text = text.replace(self._secret, REDACTED)
        text = _KEY_SHAPED.sub(REDACTED, _CONTROL.sub(" ", text)).strip()
        if len(text) > _MAX_UPSTREAM_TEXT:
            text = text[:_MAX_UPSTREAM_TEXT] + "..."
        return text

    def transport(self, exc: httpx.HTTPError, *, mid_stream: bool) -> ProviderError:
        """An httpx exception; `mid_stream`: the response had begun arriving."""
        detail = self.scrub(str(exc)) or type(exc).__name__
        name = self.provider
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ProviderConnectError(f"{name}: cannot connect: {detail}", provider=name)
        if isinstance(exc, httpx.PoolTimeout):
            return ProviderConnectError(f"{name}: no free connection in time", provider=name)
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeout(f"{name}: timed out: {detail}", provider=name)
        if mid_stream:
            return ProviderStreamBroken(f"{name}: stream broke: {detail}", provider=name)
        return ProviderConnectError(f"{name}: connection failed: {detail}", provider=name)

    def timeout(self, what: str) -> ProviderTimeout:
        return ProviderTimeout(f"{self.provider}: {what}", provider=self.provider)

    def broken(self, what: str) -> ProviderStreamBroken:
        return ProviderStreamBroken(f"{self.provider}: {what}", provider=self.provider)

    def status(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        """An HTTP error response."""
        message, code = _upstream_text(body)
        retry_after = parse_retry_after(headers, self._clock()) if status == 429 else None
        return self._by_status(status, message, code, retry_after)

    def error_event(self, event: UpstreamErrorEvent) -> ProviderError:
        """An error reported inside a 200 response, by its type (e.g. `overloaded_error`)."""
        status = _ERROR_TYPE_STATUS.get(event.error_type, 500)
        return self._by_status(status, event.message, event.error_type, None)

    def _by_status(
        self, status: int, message: str, code: str, retry_after: float | None
    ) -> ProviderError:
        name = self.provider
        text = f"{name}: HTTP {status}"
        if _ERROR_CODE.fullmatch(code) and _KEY_SHAPED.search(code) is None:
            text += f" ({code})"
        if message and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: upstream error message: %s", text, self.scrub(message))
        if status == 429:
            return ProviderRateLimited(
                text, provider=name, status=status, retry_after_s=retry_after
            )
        if status in (408, 504):
            return ProviderTimeout(text, provider=name, status=status)
        if status >= 500:
            return ProviderServerError(text, provider=name, status=status)
        if status in (400, 413, 422):
            lowered = f"{code} {message}".lower()
            if any(marker in lowered for marker in _CONTEXT_OVERFLOW):
                return ProviderContextExceeded(text, provider=name, status=status)
            detail = self.scrub(message)
            return ProviderRequestInvalid(
                text, provider=name, status=status, upstream_detail=detail
            )
        return ProviderRejected(text, provider=name, status=status)
