"""The lean HTTP/1.1 transport, under httpx, against servers on loopback that write raw bytes:
body framing however it is split, keep-alive and when a connection must not be reused,
timeouts, failures as httpx exceptions (and so as router errors), TLS; and the chunked
decoder against any split of any body."""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_service.errors import ProviderConnectError, ProviderStreamBroken
from router_service.providers.errors import ErrorMapper
from router_service.providers.h1 import ChunkedDecoder, LeanTransport
from tests.support.raw_http import CLOSE, UNTIL_CLIENT_LEAVES, RawServer, Step, raw_server
from tests.support.waiting import eventually

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
PAUSE = 0.02


def ok(body: bytes = b"hello", *headers: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def client(
    read: float = 5.0,
    *,
    max_idle_per_origin: int = 100,
    idle_expiry_s: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    transport = LeanTransport(
        ssl_context=ssl_context,
        max_idle_per_origin=max_idle_per_origin,
        idle_expiry_s=idle_expiry_s,
    )
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, read=read))


async def post(http: httpx.AsyncClient, server: RawServer, body: bytes = b"{}") -> bytes:
    """The body of a streamed POST, read through to its end."""
    async with http.stream("POST", server.url("/v1/chat"), content=body) as response:
        return b"".join([piece async for piece in response.aiter_raw()])


# --- body framing -----------------------------------------------------------------------------


async def test_a_chunked_body_split_anywhere_is_read_whole() -> None:
    answer: list[Step] = [CHUNKED + b"5\r", PAUSE, b"\nhel", PAUSE, b"lo\r", PAUSE, b"\n"]
    answer += [b"6;name=value\r\n wor", PAUSE, b"ld\r\n0\r", PAUSE, b"\nTrailer: x\r\n\r", b"\n"]
    async with (
        raw_server(answer, [CHUNKED + chunk(b"again") + LAST_CHUNK]) as server,
        client() as http,
    ):
        assert await post(http, server) == b"hello world"
        assert await post(http, server) == b"again"
        assert server.connections == 1


async def test_body_bytes_reach_the_reader_as_they_arrive() -> None:
    rest = asyncio.Event()
    answer: list[Step] = [CHUNKED + chunk(b"data: one\n\n"), rest, chunk(b"data: two\n\n")]
    async with (
        raw_server([*answer, LAST_CHUNK]) as server,
        client() as http,
        http.stream("POST", server.url(), content=b"{}") as response,
    ):
        pieces = response.aiter_raw()
        assert await anext(pieces) == b"data: one\n\n"
        rest.set()
        assert [piece async for piece in pieces] == [b"data: two\n\n"]


async def test_chunks_that_arrive_together_are_read_as_one_piece() -> None:
    events = [b"data: %d\n\n" % i for i in range(20)]
    rest = asyncio.Event()
    burst = b"".join(chunk(event) for event in events[1:])
    answer: list[Step] = [CHUNKED + chunk(events[0]), rest, burst + LAST_CHUNK]
    async with (
        raw_server(answer) as server,
        client() as http,
        http.stream("POST", server.url(), content=b"{}") as response,
    ):
        pieces = response.aiter_raw()
        assert await anext(pieces) == events[0]
        rest.set()
        await asyncio.sleep(PAUSE)  # the burst is in before the reader asks for it
        # Nineteen chunks in one network read: one piece, so the SSE layers above see them
        # together instead of once per chunk.
        assert [piece async for piece in pieces] == [b"".join(events[1:])]


async def test_content_length_body_and_the_request_as_sent() -> None:
    body = b'{"model":"glm-5.2","stream":true}'
    answer: list[Step] = [ok(b"0123456789")[:-6], PAUSE, b"456789"]
    async with raw_server(answer) as server, client() as http:
        headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
        async with http.stream("POST", server.url("/v1/x?y=1"), content=body, headers=headers) as r:
            assert r.status_code == 200
            assert r.http_version == "HTTP/1.1"
            assert await r.aread() == b"0123456789"
        request = server.requests[0]
        head, _, sent_body = request.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /v1/x?y=1 HTTP/1.1"
        assert f"Host: 127.0.0.1:{server.port}".encode() in lines
        assert b"Content-Length: %d" % len(body) in lines
        assert b"Authorization: Bearer k" in lines
        assert sent_body == body


async def test_a_streamed_request_body_goes_whole_with_its_length() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b'{"a":'
        yield b"1}"

    async with raw_server([ok()]) as server, client() as http:
        response = await http.post(server.url(), content=parts())
        assert response.text == "hello"
        head, _, body = server.requests[0].partition(b"\r\n\r\n")
        assert b"Content-Length: 7" in head.split(b"\r\n")
        assert b"transfer-encoding" not in head.lower()
        assert body == b'{"a":1}'


async def test_a_body_read_until_the_server_closes() -> None:
    answer: list[Step] = [b"HTTP/1.1 200 OK\r\n\r\nuntil ", PAUSE, b"close", CLOSE]
    async with raw_server(answer, [ok()]) as server, client() as http:
        assert await post(http, server) == b"until close"
        assert await post(http, server) == b"hello"
        assert server.connections == 2


async def test_responses_without_a_body() -> None:
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    async with (
        raw_server([head_answer], [no_content], [early_hints + ok()]) as server,
        client() as http,
    ):
        response = await http.head(server.url())
        assert (response.status_code, response.content) == (200, b"")
        response = await http.post(server.url(), content=b"{}")
        assert (response.status_code, response.content) == (204, b"")
        response = await http.post(server.url(), content=b"{}")
        assert (response.status_code, response.content) == (200, b"hello")
        assert server.connections == 1


# --- keep-alive -------------------------------------------------------------------------------


async def test_a_connection_serves_request_after_request() -> None:
    async with raw_server([ok(b"1")], [ok(b"2")], [ok(b"3")]) as server, client() as http:
        assert [await post(http, server) for _ in range(3)] == [b"1", b"2", b"3"]
        assert server.connections == 1


async def test_a_response_closed_early_closes_its_connection() -> None:
    answer: list[Step] = [CHUNKED + chunk(b"data: first\n\n"), UNTIL_CLIENT_LEAVES]
    async with raw_server(answer, [ok()]) as server, client() as http:
        async with http.stream("POST", server.url(), content=b"{}") as response:
            async for _ in response.aiter_raw():
                break
        # The upstream learns at once that nobody reads its answer any more.
        await eventually(lambda: server.closed_by_client == 1, within_s=2)
        assert await post(http, server) == b"hello"
        assert server.connections == 2


async def test_connection_close_is_not_reused() -> None:
    async with raw_server([ok(b"1", b"Connection: close")], [ok(b"2")]) as server, client() as http:
        assert await post(http, server) == b"1"
        assert await post(http, server) == b"2"
        assert server.connections == 2


async def test_an_http10_answer_is_not_reused() -> None:
    answer = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n1"
    async with raw_server([answer], [ok(b"2")]) as server, client() as http:
        async with http.stream("POST", server.url(), content=b"{}") as response:
            assert response.http_version == "HTTP/1.0"
            assert await response.aread() == b"1"
        assert await post(http, server) == b"2"
        assert server.connections == 2


async def test_bytes_past_the_end_of_a_body_spoil_the_connection() -> None:
    late: list[Step] = [ok(b"2"), PAUSE, b"HTTP/1.1 200 OK\r\n"]
    async with raw_server([ok(b"1") + b"extra"], late, [ok(b"3")]) as server, client() as http:
        assert await post(http, server) == b"1"
        assert await post(http, server) == b"2"
        await asyncio.sleep(0.05)  # the late bytes reach the idle connection
        assert await post(http, server) == b"3"
        assert server.connections == 3


async def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async with raw_server([ok(b"1"), CLOSE], [ok(b"2")]) as server, client() as http:
        assert await post(http, server) == b"1"
        await asyncio.sleep(0.05)  # the close reaches the client
        assert await post(http, server) == b"2"
        assert server.connections == 2
        assert len(server.requests) == 2


async def test_a_close_the_event_loop_has_not_delivered_yet_is_seen_before_reuse() -> None:
    # The server closes the idle connection while the loop is not watching it (as when the
    # FIN arrives while the loop is busy): the poll before reuse sees it, the request goes on
    # a new connection and is never written to the dead one.
    async with raw_server([ok(b"1"), CLOSE], [ok(b"2")]) as server, client(read=1.0) as http:
        assert await post(http, server) == b"1"
        transport = http._transport
        assert isinstance(transport, LeanTransport)
        (idle,) = transport._idle.values()
        (connection,) = idle
        assert connection._transport is not None
        connection._transport.pause_reading()
        await eventually(connection.readable, within_s=2)
        assert not connection.closed
        assert await post(http, server) == b"2"
        assert server.connections == 2
        assert connection.closed


async def test_a_reused_connection_closed_without_an_answer_is_retried_once() -> None:
    # The server read the second request and closed without a word: as when it closes an idle
    # connection just as a request leaves. The request goes again, on a new connection.
    async with raw_server([ok(b"1")], [CLOSE], [ok(b"2")]) as server, client() as http:
        assert await post(http, server) == b"1"
        assert await post(http, server) == b"2"
        assert server.connections == 2
        assert len(server.requests) == 3


async def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    async with raw_server([CLOSE], [ok()]) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            await post(http, server)
        assert len(server.requests) == 1


async def test_idle_connections_expire_and_are_bounded() -> None:
    answers = [[ok(b"%d" % i)] for i in range(6)]
    async with (
        raw_server(*answers) as server,
        client(max_idle_per_origin=1, idle_expiry_s=0.1) as http,
    ):
        # Two at once take two connections; only one of them stays in the pool.
        await asyncio.gather(post(http, server), post(http, server))
        await eventually(lambda: server.closed_by_client == 1, within_s=2)
        await post(http, server)
        assert server.connections == 2
        await asyncio.sleep(0.15)
        await post(http, server)
        assert server.connections == 3


async def test_closing_the_client_closes_its_idle_connections() -> None:
    async with raw_server([ok()]) as server:
        async with client() as http:
            await post(http, server)
        await eventually(lambda: server.closed_by_client == 1, within_s=2)


# --- timeouts ---------------------------------------------------------------------------------


async def test_no_answer_within_the_read_timeout() -> None:
    never = asyncio.Event()
    async with raw_server([never]) as server, client(read=0.2) as http:
        with pytest.raises(httpx.ReadTimeout, match="response head"):
            async with asyncio.timeout(3):  # a failure, not a hang, if it never times out
                await post(http, server)


async def test_a_body_that_stalls_times_out() -> None:
    never = asyncio.Event()
    async with (
        raw_server([CHUNKED + chunk(b"data: one\n\n"), never]) as server,
        client(read=0.2) as http,
        http.stream("POST", server.url(), content=b"{}") as response,
    ):
        pieces = response.aiter_raw()
        assert await anext(pieces) == b"data: one\n\n"
        with pytest.raises(httpx.ReadTimeout, match="response body"):
            async with asyncio.timeout(3):
                await anext(pieces)


async def test_a_slow_steady_stream_is_not_a_timeout() -> None:
    # Each gap is under the read timeout; together they are far over it. Bytes that carry
    # no body (the trailers, line by line) keep the connection alive too.
    answer: list[Step] = [CHUNKED]
    for i in range(5):
        answer += [0.08, chunk(b"%d" % i)]
    for line in (b"0\r\n", b"A: 1\r\n", b"B: 2\r\n", b"C: 3\r\n", b"\r\n"):
        answer += [0.08, line]
    async with raw_server(answer) as server, client(read=0.2) as http:
        assert await post(http, server) == b"01234"


async def test_a_slow_reader_is_not_a_timeout() -> None:
    # Silence while nobody waits for the connection does not count against it: the reader
    # is busy for longer than the read timeout, then waits for less.
    answer: list[Step] = [CHUNKED + chunk(b"a"), 0.7, chunk(b"b"), LAST_CHUNK]
    async with (
        raw_server(answer) as server,
        client(read=0.3) as http,
        http.stream("POST", server.url(), content=b"{}") as response,
    ):
        pieces = []
        async for piece in response.aiter_raw():
            pieces.append(piece)
            await asyncio.sleep(0.5)
    assert pieces == [b"a", b"b"]


# --- failures ---------------------------------------------------------------------------------


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with client() as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.post(f"http://127.0.0.1:{port}/v1", content=b"{}")
    assert caught.value.request.url.port == port
    error = ErrorMapper("local", None).transport(caught.value, mid_stream=False)
    assert isinstance(error, ProviderConnectError)


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (CHUNKED + b"zz\r\nhello\r\n", "chunk-size"),
        (CHUNKED + b"5\r\nhello!!" + LAST_CHUNK, "CRLF"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", "Content-Length"),
        (b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "header line"),
    ],
)
async def test_malformed_framing_is_a_protocol_error(answer: bytes, match: str) -> None:
    async with raw_server([answer, UNTIL_CLIENT_LEAVES]) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match=match):
            await post(http, server)


async def test_a_connection_lost_mid_body_is_a_broken_stream() -> None:
    answer: list[Step] = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf ", PAUSE, CLOSE]
    async with raw_server(answer) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="middle of the response body") as e:
            await post(http, server)
    error = ErrorMapper("local", None).transport(e.value, mid_stream=True)
    assert isinstance(error, ProviderStreamBroken)
    assert e.value.request.url.path == "/v1/chat"


async def test_a_chunked_body_cut_short_is_a_protocol_error() -> None:
    answer: list[Step] = [CHUNKED + chunk(b"data: one\n\n"), PAUSE, CLOSE]
    async with raw_server(answer) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(http, server)


async def test_a_header_value_that_would_split_the_request_is_refused() -> None:
    async with raw_server() as server, client() as http:
        with pytest.raises(httpx.LocalProtocolError):
            await http.post(server.url(), content=b"{}", headers={"X-Evil": "a\r\nHost: b"})
        assert server.requests == []


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, made with the openssl command."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
    subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run([*command.split(), *subject, *files], check=True, capture_output=True)
    return cert, key


async def test_https_with_sni_and_alpn(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server_tls.set_alpn_protocols(["h2", "http/1.1"])
    trusted = ssl.create_default_context(cafile=str(cert))
    answer: list[Step] = [CHUNKED + b"5\r\nhel", PAUSE, b"lo\r\n" + LAST_CHUNK]
    async with (
        raw_server(answer, [ok()], tls=server_tls) as server,
        client(ssl_context=trusted) as http,
    ):
        url = server.url("/v1", scheme="https", host="localhost")
        for expected in (b"hello", b"hello"):
            async with http.stream("POST", url, content=b"{}") as response:
                assert await response.aread() == expected
    assert server.connections == 1
    assert server.server_names == ["localhost"]
    assert server.alpn == ["http/1.1"]


async def test_an_untrusted_certificate_is_a_connect_error(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    async with raw_server(tls=server_tls) as server, client() as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.post(server.url(scheme="https", host="localhost"), content=b"{}")


# --- the chunked decoder ----------------------------------------------------------------------


@st.composite
def chunked_encodings(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A body, and one chunked encoding of it (any chunk sizes, extensions, trailers)."""
    body = draw(st.binary(max_size=2000))
    encoded = b""
    rest = body
    while rest:
        size = draw(st.integers(1, len(rest)))
        extension = draw(st.sampled_from([b"", b";a=b", b" ; x"]))
        size_text = draw(st.sampled_from([b"%x", b"%X", b"%04x"])) % size
        encoded += size_text + extension + b"\r\n" + rest[:size] + b"\r\n"
        rest = rest[size:]
    trailers = draw(st.sampled_from([b"", b"Trailer: 1\r\n", b"A: 1\r\nB: 2\r\n"]))
    return body, encoded + b"0\r\n" + trailers + b"\r\n"


@given(chunked_encodings(), st.lists(st.integers(0, 4000), max_size=20))
def test_the_chunked_decoder_yields_the_body_for_any_split(
    encoding: tuple[bytes, bytes], cuts: list[int]
) -> None:
    body, encoded = encoding
    bounds = sorted({0, len(encoded), *(cut % (len(encoded) + 1) for cut in cuts)})
    decoder = ChunkedDecoder()
    decoded = b""
    for start, stop in itertools.pairwise(bounds):
        assert not decoder.done
        decoded += b"".join(decoder.feed(encoded[start:stop]))
    assert decoded == body
    assert decoder.done
    assert not decoder.excess


def test_the_chunked_decoder_notes_bytes_after_the_end() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"1\r\na\r\n0\r\n\r\nHTTP/1.1") == [b"a"]
    assert decoder.done and decoder.excess
