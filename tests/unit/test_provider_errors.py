"""Provider failures map to the right router errors, with safe messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from router_service.providers.errors import (
    ErrorMapper,
    UpstreamErrorEvent,
    parse_duration,
    parse_retry_after,
)
from tests.support.fake_wire import REFUSED_PARAMETERS

KEY = "sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
NOW = 1_700_000_000.0


def mapper() -> ErrorMapper:
    return ErrorMapper("zai", KEY, clock=lambda: NOW)


def openai_error(message: str, code: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, ProviderRequestInvalid, False),
        (401, ProviderRejected, False),
        (403, ProviderRejected, False),
        (404, ProviderRejected, False),
        (408, ProviderTimeout, True),
        (413, ProviderRequestInvalid, False),
        (422, ProviderRequestInvalid, False),
        (429, ProviderRateLimited, True),
        (500, ProviderServerError, True),
        (502, ProviderServerError, True),
        (503, ProviderServerError, True),
        (504, ProviderTimeout, True),
        (529, ProviderServerError, True),
    ],
)
def test_statuses(status: int, kind: type[ProviderError], retryable: bool) -> None:
    error = mapper().status(status, {}, openai_error("nope"))
    assert type(error) is kind
    assert error.retryable is retryable
    assert error.status == status and error.provider == "zai"
    # The upstream's error code, never its free text (which may quote the prompt).
    assert error.message == f"zai: HTTP {status} (invalid_request_error)"


@pytest.mark.parametrize(
    "body",
    [
        openai_error("This model's maximum context length is 8192 tokens.", None),
        openai_error("too long", "context_length_exceeded"),
        json.dumps(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 210000 tokens > 200000 maximum",
                },
            }
        ).encode(),
    ],
)
def test_context_overflow_is_told_apart_from_a_bad_request(body: bytes) -> None:
    assert type(mapper().status(400, {}, body)) is ProviderContextExceeded


def test_429_carries_retry_after() -> None:
    error = mapper().status(429, {"retry-after": "7"}, b"")
    assert isinstance(error, ProviderRateLimited) and error.retry_after_s == 7.0
    error = mapper().status(429, {"retry-after-ms": "1500", "retry-after": "9"}, b"")
    assert isinstance(error, ProviderRateLimited) and error.retry_after_s == 1.5
    error = mapper().status(429, {}, b"")
    assert isinstance(error, ProviderRateLimited) and error.retry_after_s is None


def test_retry_after_forms() -> None:
    date = format_datetime(datetime.fromtimestamp(NOW + 30, tz=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": date}, NOW) == pytest.approx(30, abs=1)
    assert parse_retry_after({"retry-after": "0.25"}, NOW) == 0.25
    assert parse_retry_after({"retry-after": "-3"}, NOW) == 0.0
    assert parse_retry_after({"retry-after": "soon"}, NOW) is None
    assert parse_retry_after({"retry-after-ms": "x", "retry-after": "2"}, NOW) == 2.0


@given(st.text(max_size=60))
def test_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after({"retry-after": value}, NOW)
    assert result is None or result >= 0


# OpenAI's rate-limit headers on a 429: no Retry-After, the resets as durations.
SPENT_REQUESTS = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "20s",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-tokens": "6m0s",
}


def test_a_429_without_retry_after_waits_for_the_spent_limit_to_reset() -> None:
    # Requests are spent: their reset applies; tokens are left: theirs does not.
    error = mapper().status(429, SPENT_REQUESTS, openai_error("Rate limit reached", "x"))
    assert isinstance(error, ProviderRateLimited) and error.retry_after_s == 20.0
    both = {**SPENT_REQUESTS, "x-ratelimit-remaining-tokens": "0"}
    assert parse_retry_after(both, NOW) == 360.0  # the longest that applies
    # A reset whose remaining count is not given may be what refused.
    assert parse_retry_after({"x-ratelimit-reset-tokens": "1m30s"}, NOW) == 90.0
    assert parse_retry_after({**SPENT_REQUESTS, "x-ratelimit-remaining-requests": "3"}, NOW) is None


def test_a_429_message_says_when_to_try_again() -> None:
    message = (
        "Rate limit reached for gpt-5.5 on tokens per min (TPM): Limit 30000, Used 29000, "
        "Requested 2000. Please try again in 26.604s. Visit https://platform.openai.com/..."
    )
    error = mapper().status(429, {}, openai_error(message, "rate_limit_exceeded"))
    assert isinstance(error, ProviderRateLimited) and error.retry_after_s == pytest.approx(26.604)
    assert parse_retry_after({}, NOW, "Please try again in 20ms.") == pytest.approx(0.02)
    assert parse_retry_after({}, NOW, "try again in 1m30s") == 90.0
    # The longest of the message and the spent limits' resets.
    assert parse_retry_after(SPENT_REQUESTS, NOW, "try again in 2s") == 20.0
    assert parse_retry_after(SPENT_REQUESTS, NOW, "try again in 45s") == 45.0
    # Not a duration: no hint.
    assert parse_retry_after({}, NOW, "try again in a moment") is None
    assert parse_retry_after({}, NOW, "try again in 5 minutes") is None


def test_retry_after_headers_come_first() -> None:
    slow = {**SPENT_REQUESTS, "x-ratelimit-remaining-tokens": "0"}
    assert parse_retry_after({**slow, "retry-after": "7"}, NOW, "try again in 99s") == 7.0
    assert parse_retry_after({**slow, "retry-after-ms": "1500"}, NOW) == 1.5


def test_other_reset_forms() -> None:
    assert parse_retry_after({"x-ratelimit-reset-requests": "12"}, NOW) == 12.0
    # A Unix time.
    assert parse_retry_after({"x-ratelimit-reset-requests": str(NOW + 42)}, NOW) == 42.0
    for junk in ("soon", "nan", "inf", "-", ""):
        assert parse_retry_after({"x-ratelimit-reset-requests": junk}, NOW) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("12ms", 0.012),
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("20.5s", 20.5),
        ("1h2m3s", 3723.0),
        ("250us", 0.00025),
        ("0s", 0.0),
        (" 7s ", 7.0),
        ("", None),
        ("5", None),
        ("5 s", None),
        ("1.2.3s", None),
        ("s", None),
        ("-3s", None),
        ("3d", None),
    ],
)
def test_durations(text: str, seconds: float | None) -> None:
    result = parse_duration(text)
    assert result == (None if seconds is None else pytest.approx(seconds))


@given(
    st.integers(0, 48),
    st.integers(0, 59),
    st.decimals(0, 59, places=3, allow_nan=False, allow_infinity=False),
)
def test_go_durations_parse_to_their_seconds(hours: int, minutes: int, seconds: Decimal) -> None:
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + f"{seconds}s"
    assert parse_duration(text) == pytest.approx(hours * 3600 + minutes * 60 + float(seconds))


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "retry-after",
                "retry-after-ms",
                "x-ratelimit-reset-requests",
                "x-ratelimit-reset-tokens",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-remaining-tokens",
            ]
        ),
        st.text(max_size=20),
    ),
    st.text(max_size=80).map(lambda tail: "Please try again in " + tail),
)
def test_when_to_retry_never_raises(headers: dict[str, str], message: str) -> None:
    result = parse_retry_after(headers, NOW, message)
    assert result is None or result >= 0


@pytest.mark.parametrize(
    ("code", "message"),
    REFUSED_PARAMETERS,
)
def test_a_refused_parameter_is_the_deployments_not_the_callers(code: str, message: str) -> None:
    error = mapper().status(400, {}, openai_error(message, code))
    # Not the caller's fault: the next candidate is tried, and this deployment is blamed.
    assert type(error) is ProviderRejected
    assert error.status == 400
    # The upstream's words name the parameter, so they are shown (scrubbed).
    assert error.message == f"zai: HTTP 400 ({code}): {message}"
    # Within a stream too.
    event = UpstreamErrorEvent("invalid_request_error", message, code)
    assert type(mapper().error_event(event)) is ProviderRejected


def test_a_refused_parameters_text_is_scrubbed() -> None:
    body = openai_error(f"Unsupported parameter: 'x' with key {KEY}\n", "unsupported_parameter")
    error = mapper().status(400, {}, body)
    assert KEY not in error.message and "\n" not in error.message
    assert error.message.startswith("zai: HTTP 400 (unsupported_parameter): Unsupported")


def test_upstream_text_never_reaches_the_message(caplog: pytest.LogCaptureFixture) -> None:
    body = openai_error(f"Incorrect API key provided: {KEY}. Find your key at ...")
    error = mapper().status(401, {}, body)
    assert KEY not in error.message and "Incorrect" not in error.message
    # A prompt quoted back, even with a key that has no recognisable shape.
    odd_key = "zqxjkvbnmwp9917-upstreamsecret"
    quoted = openai_error(f"content 'my ssn is 123-45-6789' invalid; key {odd_key.upper()}")
    error = mapper().status(400, {}, quoted)
    assert error.message == "zai: HTTP 400 (invalid_request_error)"
    # The text goes to the DEBUG log only, without this provider's key or key-shaped strings.
    with caplog.at_level("DEBUG", logger="router_service.providers.errors"):
        mapper().status(403, {}, openai_error(f"{KEY} and sk-other-abcdef1234 / Bearer abc.def"))
    logged = caplog.text
    assert "upstream error message" in logged
    assert KEY not in logged and "sk-other" not in logged and "abc.def" not in logged


def test_only_identifier_like_codes_are_shown() -> None:
    def shown(code: object) -> str:
        body = json.dumps({"error": {"message": "x", "code": code}}).encode()
        return mapper().status(400, {}, body).message

    assert shown("context_length_exceeded").endswith("(context_length_exceeded)")
    assert shown("the prompt 'hello world' is bad") == "zai: HTTP 400"
    assert shown("sk-proj-abcdefghijkl") == "zai: HTTP 400"
    assert shown(None) == "zai: HTTP 400"


def test_long_or_binary_upstream_text_is_cut_and_cleaned() -> None:
    error = mapper().status(500, {}, b"<html>\n" + b"x" * 5000)
    assert len(error.message) < 400 and "\n" not in error.message
    error = mapper().status(502, {}, b"\xff\xfe\x00garbage")
    assert error.message.startswith("zai: HTTP 502")


def test_error_events_map_by_type() -> None:
    m = mapper()
    assert type(m.error_event(UpstreamErrorEvent("overloaded_error", "Overloaded"))) is (
        ProviderServerError
    )
    limited = m.error_event(UpstreamErrorEvent("rate_limit_error", "slow down"))
    assert type(limited) is ProviderRateLimited
    assert type(m.error_event(UpstreamErrorEvent("invalid_request_error", "bad"))) is (
        ProviderRequestInvalid
    )
    assert type(m.error_event(UpstreamErrorEvent("something_new", "?"))) is ProviderServerError


def test_error_events_map_by_a_known_code_first() -> None:
    m = mapper()
    # OpenAI: a rate limit's type is `tokens` or `requests`; its code says what it is.
    limited = m.error_event(
        UpstreamErrorEvent(
            "tokens", "Rate limit reached. Please try again in 1.5s.", "rate_limit_exceeded"
        )
    )
    assert type(limited) is ProviderRateLimited
    assert limited.status == 429 and limited.retry_after_s == 1.5
    assert limited.message == "zai: HTTP 429 (rate_limit_exceeded)"
    overflow = m.error_event(
        UpstreamErrorEvent("invalid_request_error", "too long", "context_length_exceeded")
    )
    assert type(overflow) is ProviderContextExceeded
    # An unknown code: the type decides.
    server = m.error_event(UpstreamErrorEvent("server_error", "oops", "E4711"))
    assert type(server) is ProviderServerError and "(server_error)" in server.message
    # Only a code.
    assert type(m.error_event(UpstreamErrorEvent("", "x", "rate_limit_exceeded"))) is (
        ProviderRateLimited
    )


def test_transport_errors() -> None:
    m = mapper()
    request = httpx.Request("POST", "http://x")
    assert type(m.transport(httpx.ConnectError("refused", request=request), mid_stream=False)) is (
        ProviderConnectError
    )
    assert type(m.transport(httpx.PoolTimeout("full"), mid_stream=False)) is ProviderConnectError
    assert type(m.transport(httpx.ReadTimeout("slow"), mid_stream=True)) is ProviderTimeout
    cut = httpx.RemoteProtocolError("peer closed connection (incomplete chunked read)")
    assert type(m.transport(cut, mid_stream=False)) is ProviderConnectError
    broken = m.transport(cut, mid_stream=True)
    assert type(broken) is ProviderStreamBroken
    assert "incomplete chunked read" in broken.message


def test_no_key_means_nothing_to_scrub_but_shapes() -> None:
    assert ErrorMapper("local", None).scrub("plain message") == "plain message"
