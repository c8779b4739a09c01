"""A lean HTTP/1.1 transport for httpx, on asyncio.Protocol.

Through httpx's default transport every chunk of a streamed answer passes through httpcore,
h11 and anyio: about 3 ms of CPU per 50-token stream on a small machine, a large share of what
the gateway spends on a call. A provider call needs little of their generality (one request at
a time per connection, a body of bytes, a response read as it arrives), so `LeanTransport`
speaks that part of HTTP/1.1 itself and plugs in under httpx as its transport: responses,
exceptions and everything built on them stay httpx's.

- Connections are pooled per origin (scheme, host, port). The most recently used idle one is
  taken first; at most `max_idle_per_origin` wait, each for at most `idle_expiry_s`. One the
  server closed while idle is skipped: known closed when its `connection_lost` ran, and
  otherwise seen by polling its socket before reuse (an idle connection has nothing to read,
  so anything readable, the end of the stream included, spoils it), as httpcore does. A
  request whose reused connection still closes before a byte of the answer came is sent once
  more on a new connection: the server closed it as idle just as the request left.
- The request (line, headers, body) goes out in one write.
- `data_received` parses the response head and the body's framing (chunked, Content-Length,
  or until the server closes) as bytes arrive, and queues the body bytes for the reader as
  they come. Reading from the socket pauses while a slow reader leaves `_HIGH_WATER` bytes
  queued.
- The read timeout costs no timer per chunk: a wait notes when it began and `data_received`
  when bytes came; one timer per response fires `read` seconds after the first wait began
  and, if there was activity since, is set again for `read` seconds after the latest.
- A connection goes back to the pool only when its response was read to the end and allows
  keep-alive. A response closed early (a cancelled call) closes its connection, which tells
  the upstream to stop generating.

Errors are httpx's, with the request attached, so `providers.errors` maps them as before:
`ConnectError`, `ConnectTimeout`, `WriteTimeout`, `ReadTimeout`; `ReadError` for a connection
reset before the answer; `RemoteProtocolError` for a malformed head or framing and for a
connection closed before the answer or in the middle of the body. There is no limit on open
connections, so the pool timeout never applies. Left out because no provider call needs them:
HTTP/2, proxies, `Expect: 100-continue`, upgrades and pipelining.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping

import httpx

from router_service.providers.h1_wire import (
    CHUNKED,
    LENGTH,
    MAX_HEAD,
    UNTIL_CLOSE,
    ChunkedDecoder,
    Head,
    body_framing,
    request_message,
)

__all__ = ["ChunkedDecoder", "LeanTransport"]

Origin = tuple[str, str, int]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Queued body bytes at which reading pauses, and at which it resumes.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one exchange at a time. `send` writes a request and waits for
    the response head; the body then queues in `pieces`, read with `take` and `wait`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self._loop = loop
        self.origin = origin
        self._transport: asyncio.Transport | None = None
        self.closed = False
        # It has served an exchange before (it came from the pool).
        self.reused = False
        # A reused connection the server closed before sending a byte of the answer.
        self.closed_unanswered = False
        self.idle_since = 0.0
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False
        # The exchange in progress.
        self._request: httpx.Request | None = None
        self._received_head = b""
        self.head: Head | None = None
        self._framing = UNTIL_CLOSE
        self._remaining = 0
        self._decoder: ChunkedDecoder | None = None
        self.pieces: deque[bytes] = deque()
        self._queued = 0
        self.body_done = False
        self.keep_alive = False
        self.error: httpx.TransportError | None = None
        # The read timeout, and what it measures silence from.
        self._read_timeout: float | None = None
        self._activity = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None

    # --- the reader's side ----------------------------------------------------------------

    async def send(
        self, request: httpx.Request, message: bytes, timeouts: Mapping[str, float | None]
    ) -> Head:
        """Write `message` (the whole request) and wait for the response head; closes the
        connection if anything (a cancellation too) interrupts."""
        assert self._transport is not None
        self._start(request, timeouts.get("read"))
        try:
            self._transport.write(message)
            if self._drained is not None:
                await self._drain(request, timeouts.get("write"))
            while self.head is None:
                await self.wait()
        except BaseException:
            self.close()
            raise
        return self.head

    async def wait(self) -> None:
        """Until bytes come, the body ends or the exchange fails (raised)."""
        if self.error is None:
            loop = self._loop
            self._waiter = waiter = loop.create_future()
            if self._read_timeout is not None:
                self._activity = loop.time()
                if self._timer is None:
                    self._timer = loop.call_at(
                        self._activity + self._read_timeout, self._check_silence
                    )
            await waiter
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        """The body bytes queued so far, as one piece: what arrived together is read together
        (a chunked body's framing says nothing about its content)."""
        pieces = self.pieces
        piece = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        self._queued -= len(piece)
        if self._reading_paused and self._queued <= _LOW_WATER:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        return piece

    def readable(self) -> bool:
        """The socket has bytes or an end of stream the event loop has not delivered yet, or
        there is no socket left: either way the connection cannot serve another request."""
        if self._transport is None:
            return True
        sock = self._transport.get_extra_info("socket")
        fd = -1 if sock is None else sock.fileno()
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    @property
    def reusable(self) -> bool:
        return self.keep_alive and self.body_done and self.error is None and not self.closed

    def idle(self) -> None:
        """The exchange is over and the connection goes back to the pool."""
        self._end_exchange()
        self.reused = True
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.closed = True
        self._end_exchange()
        if self._transport is not None:
            self._transport.abort()

    def _start(self, request: httpx.Request, read_timeout: float | None) -> None:
        self._request = request
        self._read_timeout = read_timeout
        self._received_head = b""
        self.head = None
        self.pieces.clear()
        self._queued = 0
        self.body_done = False
        self.keep_alive = False
        self.error = None

    def _end_exchange(self) -> None:
        self._request = None
        self.head = None
        self.pieces.clear()
        self._queued = 0
        self._stop_timer()
        if self._reading_paused and self._transport is not None:
            # An idle connection must keep reading to see the server close it.
            self._reading_paused = False
            self._transport.resume_reading()

    async def _drain(self, request: httpx.Request, write_timeout: float | None) -> None:
        try:
            async with asyncio.timeout(write_timeout):
                while self._drained is not None and not self.closed:
                    await self._drained
        except TimeoutError:
            raise httpx.WriteTimeout(
                f"the request was not sent within {write_timeout:g} s", request=request
            ) from None

    def _check_silence(self) -> None:
        self._timer = None
        if self._waiter is None or self._read_timeout is None:
            return  # nobody is waiting: the next wait sets the timer again
        quiet_until = self._activity + self._read_timeout
        if self._loop.time() < quiet_until:
            self._timer = self._loop.call_at(quiet_until, self._check_silence)
        else:
            what = "the response head" if self.head is None else "the response body"
            self._fail(
                httpx.ReadTimeout(
                    f"no data for {self._read_timeout:g} s while reading {what}",
                    request=self._request,
                )
            )

    # --- the event loop's side -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._activity = self._loop.time()
        if self.head is not None:
            self._body_received(data)
        elif self._request is not None:
            self._head_received(data)
        else:
            self.close()  # a server does not speak unasked: this connection is not reusable

    def eof_received(self) -> None:
        # The server sends nothing more (connection_lost follows): never reuse it from now on.
        self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        request = self._request
        if request is None or self.body_done or self.error is not None:
            return
        head = self.head
        if head is None:
            self.closed_unanswered = self.reused and not self._received_head
            if exc is None:
                error: httpx.TransportError = httpx.RemoteProtocolError(
                    "the server closed the connection without answering", request=request
                )
            else:
                error = httpx.ReadError(f"the connection broke: {exc}", request=request)
            self._fail(error)
        elif self._framing == UNTIL_CLOSE and exc is None:
            self._end_body()
            self._wake()
        else:
            reason = f" ({exc})" if exc is not None else ""
            self._fail(
                httpx.RemoteProtocolError(
                    f"the connection closed in the middle of the response body{reason}",
                    request=request,
                )
            )

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _head_received(self, data: bytes) -> None:
        received = self._received_head + data
        assert self._request is not None
        while True:
            end = received.find(b"\r\n\r\n")
            if end < 0:
                if len(received) > MAX_HEAD:
                    self._protocol_error(f"a response head longer than {MAX_HEAD} bytes")
                self._received_head = received
                return
            try:
                head = Head(received[:end])
                framing, length, keep_alive = body_framing(head, self._request.method)
            except ValueError as exc:
                self._protocol_error(str(exc))
                return
            received = received[end + 4 :]
            if head.status >= 200:
                break
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
        self._received_head = b""
        self._framing = framing
        self._remaining = length
        self._decoder = ChunkedDecoder() if framing == CHUNKED else None
        self.keep_alive = keep_alive
        self.head = head
        if framing == LENGTH and not length:
            self._end_body()
        self._wake()
        if received:
            self._body_received(received)

    def _body_received(self, data: bytes) -> None:
        if self.body_done or self.error is not None:
            self.keep_alive = False  # bytes past the end of the body
            return
        framing = self._framing
        if framing == CHUNKED:
            assert self._decoder is not None
            try:
                pieces = self._decoder.feed(data)
            except ValueError as exc:
                self._protocol_error(str(exc))
                return
            if pieces:
                self._queue(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            if self._decoder.done:
                self.keep_alive = self.keep_alive and not self._decoder.excess
                self._end_body()
        elif framing == LENGTH:
            if len(data) > self._remaining:
                data = data[: self._remaining]
                self.keep_alive = False
            self._remaining -= len(data)
            self._queue(data)
            if not self._remaining:
                self._end_body()
        else:
            self._queue(data)
        if self.pieces or self.body_done:
            self._wake()

    def _queue(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self._queued += len(piece)
        if self._queued > _HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def _end_body(self) -> None:
        self.body_done = True
        self._stop_timer()

    def _protocol_error(self, what: str) -> None:
        self._fail(httpx.RemoteProtocolError(what, request=self._request))

    def _fail(self, error: httpx.TransportError) -> None:
        """The exchange cannot go on: the reader gets `error`, the connection is dropped."""
        if self.error is None:
            self.error = error
        self.keep_alive = False
        self._wake()
        self.closed = True
        self._stop_timer()
        if self._transport is not None:
            self._transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _ResponseBody(httpx.AsyncByteStream):
    """A response body as its bytes arrive; closing it releases the connection."""

    def __init__(self, transport: LeanTransport, connection: _Connection) -> None:
        self._transport = transport
        self._connection: _Connection | None = connection

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        pieces = connection.pieces
        while True:
            if pieces:
                yield connection.take()
            elif connection.body_done:
                return
            else:
                await connection.wait()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._transport.release(connection)


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 for httpx over pooled keep-alive connections (see the module docstring).

    `ssl_context` verifies https origins (by default httpx's: the system's default settings
    with certifi's or `SSL_CERT_FILE`'s certificates); ALPN offers only http/1.1 on it.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_per_origin: int = 100,
        idle_expiry_s: float = 30.0,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_idle = max_idle_per_origin
        self._idle_expiry_s = idle_expiry_s
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        default_port = _DEFAULT_PORTS.get(url.scheme)
        if default_port is None:
            raise httpx.UnsupportedProtocol(f"no HTTP/1.1 over {url.scheme!r}", request=request)
        origin = (url.scheme, url.raw_host.decode("ascii"), url.port or default_port)
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", {})
        message = request_message(request, await request.aread())
        connection = self._pooled(origin)
        while True:
            if connection is None:
                connection = await self._connect(origin, request, timeouts.get("connect"))
            try:
                head = await connection.send(request, message, timeouts)
                break
            except httpx.TransportError:
                if not connection.closed_unanswered:
                    raise
                connection = None  # closed as idle while the request left: once more, anew
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=_ResponseBody(self, connection),
            extensions={
                "http_version": b"HTTP/1.1" if head.http11 else b"HTTP/1.0",
                "reason_phrase": head.reason,
            },
        )

    def release(self, connection: _Connection) -> None:
        """Back to the pool if it can serve another request, else closed."""
        if not connection.reusable or self._closed:
            connection.close()
            return
        connection.idle()
        idle = self._idle.setdefault(connection.origin, deque())
        if len(idle) >= self._max_idle:
            idle.popleft().close()
        idle.append(connection)

    async def aclose(self) -> None:
        """Closes the idle connections; those in use close when their response does."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    def _pooled(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        fresh_since = time.monotonic() - self._idle_expiry_s
        while idle:
            connection = idle.pop()
            if (
                not connection.closed
                and connection.idle_since > fresh_since
                and not connection.readable()
            ):
                return connection
            connection.close()
        return None

    async def _connect(
        self, origin: Origin, request: httpx.Request, connect_timeout: float | None
    ) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._tls() if scheme == "https" else None
        try:
            async with asyncio.timeout(connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, origin),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"connecting to {host}:{port} took longer than {connect_timeout:g} s",
                request=request,
            ) from exc
        except OSError as exc:
            raise httpx.ConnectError(
                f"cannot connect to {host}:{port}: {exc}", request=request
            ) from exc
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        self._ssl_context.set_alpn_protocols(["http/1.1"])
        return self._ssl_context
