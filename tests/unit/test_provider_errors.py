"""Provider failures map to the right router errors, with safe messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
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
from router_service.providers.errors import ErrorMapper, UpstreamErrorEvent, parse_retry_after

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
