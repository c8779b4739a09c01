"""Provider failures translated into the router's errors, in this one place.

Adapters catch httpx exceptions, read error statuses and error events, and hand them to their
`ErrorMapper`, which returns the `errors.Provider*` to raise (`raise mapper.x(...) from exc`):

    httpx.ConnectError, ConnectTimeout, PoolTimeout  ProviderConnectError
    httpx network/protocol error, before a response  ProviderConnectError
    httpx network/protocol error, mid-stream         ProviderStreamBroken
    our first-token, idle and total deadlines        ProviderTimeout
    HTTP 408, 504                                    ProviderTimeout
    HTTP 429                                         ProviderRateLimited (with when to retry)
    HTTP 5xx, 529 (overloaded)                       ProviderServerError
    HTTP 400/413/422 saying the prompt is too long   ProviderContextExceeded
    HTTP 400/413/422 refusing a parameter or value   ProviderRejected
      this deployment's model does not take
      (`unsupported_parameter`, `unsupported_value`)
    HTTP 400, 413, 422                               ProviderRequestInvalid
    HTTP 401, 403, 404, other 4xx                    ProviderRejected
    a body that is not SSE/JSON, or stops early      ProviderStreamBroken

A refused parameter is the deployment's parameter policy, not the caller's fault: OpenAI's
reasoning models refuse `max_tokens` and any temperature but 1, which another candidate takes.
So it moves on to the next candidate and counts against the deployment, as a wrong model name
would, instead of ending the call as an invalid request.

When to retry after a 429: `retry-after-ms`, else `retry-after` (seconds or an HTTP date); when
neither is given (OpenAI sends neither), the longest of the `x-ratelimit-reset-requests` and
`x-ratelimit-reset-tokens` whose limit is spent (durations such as `6m0s`, `12ms`) and the
message's "try again in 26.604s"; None when nothing says, and the breaker then takes the
deployment out for its cool-down.

Error events inside a stream (Anthropic's `error`, an OpenAI-style `{"error": ...}` chunk, or
one in place of a whole answer) are mapped through the status their code stands for when it is
a known one (OpenAI's `rate_limit_exceeded` comes with the type `tokens` or `requests`), else
their type. What the fallback logic does with each class is described in
`router_service.fallback`.

Every message is safe to log, trace and record: it names the provider, the status and the
upstream's error code (`context_length_exceeded`, `overloaded_error`, ...), never the upstream's
free-text message, which may quote the prompt or a credential. That text, scrubbed of the
provider's key (and anything shaped like one) and cut to a few hundred characters, is logged at
DEBUG only, and a request the upstream refused as invalid carries it as `upstream_detail` for
its caller alone (it is about the caller's own request). The one exception is a refused
parameter: that text names the parameter and the value refused, not the prompt, and whoever
fixes the deployment's config needs it, so it is part of the message (scrubbed the same way).
Transport failures name the network error, scrubbed the same way.
"""

from __future__ import annotations

import json
import logging
import math
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
# What an error's type or code means, as the HTTP status the same error would have had.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "unsupported_parameter": 400,
    "unsupported_value": 400,
    "context_length_exceeded": 400,
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
# A 400 with one of these codes refuses a parameter (or a value of one) that this deployment's
# model does not take, e.g. `max_tokens` or a temperature other than 1 on OpenAI's reasoning
# models: the deployment's parameter policy, which another candidate may not share.
_PARAMETER_POLICY = frozenset({"unsupported_parameter", "unsupported_value"})
# A Go-style duration, as OpenAI writes its rate-limit resets: `6m0s`, `12ms`, `20.5s`, `1h2m`.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# "Please try again in 26.604s." / "try again in 20ms" / "try again in 1m30s" in a 429's message.
_TRY_AGAIN = re.compile(rf"(?i)try again in\s*({_DURATION.pattern})(?![A-Za-z])")
# The rate-limit resets OpenAI sends (instead of Retry-After), each with the count it resets.
_RESETS = (
    ("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests"),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
)
# A bare reset larger than this is a Unix time, not a number of seconds.
_UNIX_TIME = 1e9


class UpstreamErrorEvent(Exception):
    """A parser found an error object where the answer should be (`type` as the API names
    it, e.g. `overloaded_error`); `ErrorMapper.error_event` turns it into a router error."""

    def __init__(self, error_type: str, message: str, code: str = "") -> None:
        super().__init__(error_type, message, code)
        self.error_type = error_type
        self.message = message
        # OpenAI's `code` (`rate_limit_exceeded`, `context_length_exceeded`, ...), if any.
        self.code = code


def parse_retry_after(headers: Mapping[str, str], now: float, message: str = "") -> float | None:
    """Seconds to wait after a 429: from `retry-after-ms` or `retry-after` (seconds or an HTTP
    date) when given, else the longest of the rate-limit resets whose limit is spent and the
    message's "try again in ..."; None when nothing says."""
    explicit = _explicit_retry_after(headers, now)
    if explicit is not None:
        return explicit
    hints = [
        _reset(headers, reset, now) for reset, remaining in _RESETS if _spent(headers, remaining)
    ]
    hinted = _TRY_AGAIN.search(message)
    if hinted is not None:
        hints.append(parse_duration(hinted.group(1).lower()))
    known = [hint for hint in hints if hint is not None]
    return max(known) if known else None


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (`6m0s`, `12ms`, `20.5s`), or None if it is not one."""
    text = text.strip()
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(value) * _UNIT_S[unit] for value, unit in _DURATION_PART.findall(text))


def _spent(headers: Mapping[str, str], remaining: str) -> bool:
    """Whether the limit a reset belongs to may be what refused: none left, or not said. (A
    token limit with tokens left can still refuse a larger request; its message says when.)"""
    value = headers.get(remaining)
    if value is None:
        return True
    try:
        return float(value) <= 0
    except ValueError:
        return True


def _reset(headers: Mapping[str, str], name: str, now: float) -> float | None:
    """Seconds until a rate-limit reset: a duration, a number of seconds, or a Unix time."""
    value = headers.get(name)
    if value is None:
        return None
    duration = parse_duration(value)
    if duration is not None:
        return duration
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds - now if seconds > _UNIX_TIME else seconds)


def _explicit_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds from `retry-after-ms` (OpenAI) or `retry-after` (seconds or an HTTP date)."""
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
        retry_after = parse_retry_after(headers, self._clock(), message) if status == 429 else None
        return self._by_status(status, message, code, retry_after)

    def error_event(self, event: UpstreamErrorEvent) -> ProviderError:
        """An error reported inside a 200 response, by its code when that is a known one (OpenAI
        says `rate_limit_exceeded` with the type `tokens`), else by its type (e.g.
        `overloaded_error`)."""
        code = event.code if event.code in _ERROR_TYPE_STATUS else event.error_type or event.code
        status = _ERROR_TYPE_STATUS.get(code, 500)
        retry_after = parse_retry_after({}, self._clock(), event.message) if status == 429 else None
        return self._by_status(status, event.message, code, retry_after)

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
            if code in _PARAMETER_POLICY:
                # Names a parameter, not the prompt: shown, so the config can be fixed.
                shown = f"{text}: {self.scrub(message)}" if message else text
                return ProviderRejected(shown, provider=name, status=status)
            detail = self.scrub(message)
            return ProviderRequestInvalid(
                text, provider=name, status=status, upstream_detail=detail
            )
        return ProviderRejected(text, provider=name, status=status)
