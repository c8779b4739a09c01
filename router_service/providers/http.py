"""What the HTTP adapters share: the one client, one upstream endpoint, and timed reads.

`build_http_client` makes the process's single `httpx.AsyncClient`. HTTPS providers go through
httpx's own transport, with HTTP/2 where they offer it. Providers on HTTP/1.1 (cleartext
`http://` ones, where HTTP/2 is never used, and those configured with `http2: false`) go through
one `h1.LeanTransport` mounted on their origins, which reads a streamed answer for a fraction
of the CPU that httpcore, h11 and anyio spend on it. An `HttpEndpoint` is one provider's base
URL, headers and timeouts on that client. Its `answer` sends one request, turns error statuses
and transport failures into router errors, and feeds the body (server-sent events, or one JSON
document) to the wire format's `AnswerParser` under the call's `CallDeadline`, yielding the
parser's events a network read at a time.

Timing, per call: until the first token, every wait (connect, headers, body) is bounded by an
`asyncio.timeout_at` on the first-token deadline. Once tokens flow, the idle limit is the
transport's read timeout (it already watches every read, so a second timer per chunk would only
cost CPU) and the total limit is checked as each chunk arrives. No timer ever spans a `yield`:
a slow caller (gRPC back-pressure) must not count against the provider.

Once the stream says it is over (`data: [DONE]`, `message_stop`) the answer ends at once. What
is left of the body (normally just the end of its framing) is read by a task of its own, for at
most `_DRAIN_S`, so the connection goes back to the pool; a server that keeps the body open
only costs the connection, never the caller's time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from importlib import metadata
from typing import Any, Protocol, TypeVar, cast

import httpx

from router_service.config import HttpProviderConfig, ProviderConfig, ProviderTimeouts
from router_service.errors import ProviderError
from router_service.providers.base import ProviderEvent, ProviderEvents, StreamEnd
from router_service.providers.errors import ErrorMapper, UpstreamErrorEvent
from router_service.providers.h1 import LeanTransport
from router_service.providers.sse import ServerSentEvent, SSEDecodeError, SSEDecoder

__all__ = [
    "AnswerParser",
    "CallDeadline",
    "HttpEndpoint",
    "ProviderClient",
    "build_http_client",
    "encode_json",
]

T = TypeVar("T")


def _user_agent() -> str:
    try:
        return f"llm-router/{metadata.version('llm-router')}"
    except metadata.PackageNotFoundError:
        return "llm-router"


_USER_AGENT = _user_agent()

# Idle connections kept (per httpx pool; per origin on the lean transport), and for how long.
_MAX_IDLE = 200
_IDLE_EXPIRY_S = 30.0
_LIMITS = httpx.Limits(
    max_connections=1000, max_keepalive_connections=_MAX_IDLE, keepalive_expiry=_IDLE_EXPIRY_S
)
# Error bodies are read whole to show their message; anything past this is not a message.
_MAX_ERROR_BODY = 64 * 1024
# Once the answer is complete, how long to wait (in the background) for the end of the body,
# so the connection goes back to the pool instead of being closed half-read.
_DRAIN_S = 1.0
_JSON = "application/json"
# What a parser raises on JSON that is valid but not shaped as the wire format says.
_SHAPE_ERRORS = (LookupError, TypeError, AttributeError, ValueError)


class AnswerParser(Protocol):
    """Reads one answer in one wire format, streamed (`feed` each event's data, then `end`) or
    whole (`whole`). Pure: raises `UpstreamErrorEvent` for an error object in the body, and
    ValueError, LookupError or TypeError for anything malformed. An event whose data is empty
    or blank never reaches `feed`: it holds no JSON document, in either wire format."""

    @property
    def started(self) -> bool:
        """The model has produced its first token (text, tool call or reasoning)."""
        ...

    @property
    def done(self) -> bool:
        """The stream said it is over; what follows is only read to pool the connection."""
        ...

    @property
    def complete(self) -> bool:
        """The answer is whole (checked when the body ends)."""
        ...

    def feed(self, data: bytes) -> tuple[ProviderEvent, ...]: ...

    def end(self) -> StreamEnd: ...

    def whole(self, document: bytes) -> list[ProviderEvent]: ...


class ProviderClient(httpx.AsyncClient):
    """The provider client, knowing which origins it sends through its `LeanTransport`. An
    `HttpEndpoint` on such an origin hands its requests to that transport itself: what `send`
    adds around a transport (redirects, cookies, auth flows, event hooks, none of which a
    provider call uses) costs about 0.1 ms of CPU a call."""

    def __init__(self, lean: LeanTransport, lean_origins: Mapping[str, LeanTransport]) -> None:
        super().__init__(
            http2=True,
            limits=_LIMITS,
            mounts=lean_origins,
            timeout=httpx.Timeout(connect=5.0, read=60.0, write=10.0, pool=5.0),
        )
        self._lean_origins = frozenset(lean_origins)
        self._lean = lean

    def lean_transport(self, url: str) -> LeanTransport | None:
        """The lean transport if requests to `url` go through it."""
        return self._lean if _origin(httpx.URL(url)) in self._lean_origins else None


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")


def build_http_client(
    providers: Mapping[str, ProviderConfig], environ: Mapping[str, str]
) -> ProviderClient:
    """The one client for every provider. Providers on HTTP/1.1 (cleartext, or `http2: false`)
    share one `LeanTransport`, mounted on each of their origins; closing the client closes it.
    An origin the environment sends through a proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
    not excluded by `NO_PROXY`) stays on httpx, which speaks to proxies; the lean one does not."""
    lean = LeanTransport(max_idle_per_origin=_MAX_IDLE, idle_expiry_s=_IDLE_EXPIRY_S)
    mounts: dict[str, LeanTransport] = {}
    for config in providers.values():
        if not isinstance(config, HttpProviderConfig):
            continue
        url = httpx.URL(config.resolved_base_url(environ))
        if (url.scheme == "http" or not config.http2) and not _proxied(url, environ):
            mounts[_origin(url)] = lean
    return ProviderClient(lean, mounts)


def _proxied(url: httpx.URL, environ: Mapping[str, str]) -> bool:
    """Whether the `*_PROXY` variables in `environ` send requests to `url` through a proxy."""
    variables = {name.lower(): value for name, value in environ.items() if value}
    if not (variables.get(f"{url.scheme}_proxy") or variables.get("all_proxy")):
        return False
    host = url.host.lower()
    for entry in variables.get("no_proxy", "").split(","):
        # `*`, a host, or a domain (`example.com` and `.example.com` cover its subdomains).
        domain = entry.strip().lower().lstrip(".").rsplit(":", 1)[0]
        if domain == "*" or (domain and (host == domain or host.endswith("." + domain))):
            return False
    return True


class CallDeadline:
    """The limits of one call, in event-loop time: the first token within `first_token` of the
    start, then no silence longer than `idle` (httpx's read timeout), the whole call `total`."""

    __slots__ = ("_timeouts", "complete", "first_token_at", "streaming", "total_at")

    def __init__(self, timeouts: ProviderTimeouts, now: float, *, streamed: bool = True) -> None:
        self._timeouts = timeouts
        self.total_at = now + timeouts.total
        # A call that is not streamed has no first token before its whole answer.
        first = timeouts.first_token if streamed else timeouts.total
        self.first_token_at = min(now + first, self.total_at)
        self.streaming = False
        self.complete = False

    def first_token(self) -> None:
        """Tokens are flowing: from now on only the idle and total limits apply."""
        self.streaming = True

    def answer_complete(self) -> None:
        """The answer is whole; what is left of the body is only read to keep the connection."""
        self.complete = True

    @property
    def timed_reads(self) -> bool:
        """Whether the next read needs a timer of its own (before the first token, or while
        draining a complete answer)."""
        return self.complete or not self.streaming

    def read_by(self, now: float) -> float:
        """When a timed read must have completed."""
        if self.complete:
            return min(now + _DRAIN_S, self.total_at)
        return self.first_token_at

    def describe(self, now: float, *, silent: bool = False) -> str:
        """Which limit has just passed, in words; `silent`: the connection sent nothing for
        `idle` seconds."""
        t = self._timeouts
        if now >= self.total_at:
            return f"the call exceeded its total limit of {t.total:g} s"
        if silent:
            after = " after the answer began" if self.streaming else ""
            return f"no data for {t.idle:g} s{after}"
        return f"no token within {t.first_token:g} s"


class HttpEndpoint:
    """One provider's API on the shared client: base URL, headers (with the key) and timeouts.

    The key is resolved here, once, from the environment or a mounted file; it goes into the
    headers `credentials` makes of it and into the `ErrorMapper` that scrubs it from messages.
    """

    def __init__(
        self,
        name: str,
        config: HttpProviderConfig,
        client: httpx.AsyncClient,
        environ: Mapping[str, str],
        *,
        credentials: Callable[[str], Mapping[str, str]],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        key = config.resolved_api_key(environ)
        self._client = client
        self._base_url = config.resolved_base_url(environ)
        self._lean = (
            client.lean_transport(self._base_url) if isinstance(client, ProviderClient) else None
        )
        self.streamed = config.stream
        stream_headers = {
            "accept": "text/event-stream",
            # Compressing an event stream only delays its chunks.
            "accept-encoding": "identity",
        }
        whole_headers = {"accept": "application/json", "accept-encoding": "gzip, deflate"}
        self._headers = httpx.Headers(
            {
                "user-agent": _USER_AGENT,
                **config.headers,
                "content-type": "application/json",
                **(stream_headers if config.stream else whole_headers),
                **(headers or {}),
                **(credentials(key) if key is not None else {}),
            }
        )
        timeouts = self.timeouts = config.timeouts
        self._timeout = httpx.Timeout(
            connect=timeouts.connect,
            # Between two socket reads: the idle limit (a whole answer at once: the total).
            read=timeouts.idle if config.stream else timeouts.total,
            write=timeouts.idle,
            pool=timeouts.connect,
        ).as_dict()
        # Parsed once: a request is built from these directly (the client's `build_request`,
        # which merges client-wide defaults we do not use, costs five times as much).
        self._urls: dict[str, httpx.URL] = {}
        self.errors = ErrorMapper(name, key)
        # Reading the rest of finished answers' bodies (held here: a task only weakly
        # referenced by the loop could be collected mid-way).
        self._draining: dict[asyncio.Task[None], _Drain] = {}

    @property
    def base_url(self) -> str:
        """The base URL requests go to (the environment's, if it names one), without a
        trailing slash."""
        return self._base_url

    async def aclose(self) -> None:
        """Stops reading what is left of finished answers (their connections close)."""
        draining = dict(self._draining)
        for task in draining:
            task.cancel()
        await asyncio.gather(*draining, return_exceptions=True)
        for drain in draining.values():
            await drain.close()  # a task cancelled before it ran closed nothing

    async def answer(
        self, path: str, body: bytes, parser: AnswerParser
    ) -> AsyncGenerator[ProviderEvents, None]:
        """POST `body` to `path` and yield the answer's events as `parser` reads them, those of
        one network read together."""
        streamed = self.streamed
        deadline = CallDeadline(self.timeouts, asyncio.get_running_loop().time(), streamed=streamed)
        async with self._post(path, body, deadline) as exchange:
            response = exchange.response
            # Some servers answer a streamed request with one JSON document: an error object,
            # or the whole answer when they do not stream.
            if not streamed or response.headers.get("content-type", "").startswith(_JSON):
                whole = self._parsed(parser.whole, await self._read(response, deadline))
                if whole:
                    yield whole
                return
            reads = self._events(response, deadline)
            try:
                async for read in reads:
                    batch, failure = self._events_of(parser, read)
                    if parser.started and not deadline.streaming:
                        deadline.first_token()
                    if batch:
                        yield batch  # before a failure: as if it had been read apart
                    if failure is not None:
                        raise failure
                    if parser.done:
                        break
            finally:
                if parser.done:
                    # The end goes to the caller now, however long the server keeps the body
                    # open: the rest of it is read apart.
                    self._drain(reads, exchange, deadline)
                else:
                    await reads.aclose()
            if not parser.complete:
                raise self.errors.broken("the stream ended before the answer was complete")
            yield (parser.end(),)

    def _events_of(
        self, parser: AnswerParser, read: list[ServerSentEvent]
    ) -> tuple[list[ProviderEvent], ProviderError | None]:
        """The events `parser` makes of one read's server-sent events, up to the end of the
        answer, and the error that stopped it, if one did (the events before it still go on)."""
        batch: list[ProviderEvent] = []
        try:
            for sse in read:
                data = sse.data
                if not data or data.isspace():
                    continue  # `data:` with nothing (the event-stream format allows it)
                batch += self._parsed(parser.feed, data)
                if parser.done:
                    break
        except ProviderError as exc:
            return batch, exc
        return batch, None

    def _drain(
        self, reads: AsyncGenerator[Any, None], exchange: _Exchange, deadline: CallDeadline
    ) -> None:
        """Hands what is left of a finished answer's body (`reads`, and the response) to a
        task that reads it to its end within `_DRAIN_S`, then closes the response: read to its
        end, its connection goes back to the pool."""
        deadline.answer_complete()
        exchange.handed_off = True
        drain = _Drain(reads, exchange.response)
        task = asyncio.get_running_loop().create_task(drain.run())
        self._draining[task] = drain
        task.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        self._draining.pop(task, None)

    def _parsed(self, parse: Callable[[bytes], T], data: bytes) -> T:
        try:
            return parse(data)
        except UpstreamErrorEvent as exc:
            raise self.errors.error_event(exc) from exc
        except _SHAPE_ERRORS as exc:
            raise self.errors.broken("the provider sent an answer of unexpected shape") from exc

    @asynccontextmanager
    async def _post(
        self, path: str, body: bytes, deadline: CallDeadline
    ) -> AsyncIterator[_Exchange]:
        """POST `body`; the response (2xx, body unread) is closed when the block exits, at once
        also on cancellation, so the upstream stops generating, unless the block handed it
        off (to read the end of a finished answer's body)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._base_url + path)
        request = httpx.Request(
            "POST", url, content=body, headers=self._headers, extensions={"timeout": self._timeout}
        )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline.read_by(loop.time())):
                if self._lean is not None:
                    response = await self._lean.handle_async_request(request)
                    response.request = request
                else:
                    response = await self._client.send(request, stream=True)
        except (TimeoutError, httpx.HTTPError) as exc:
            raise self._failure(exc, deadline, loop.time(), mid_stream=False) from exc
        exchange = _Exchange(response)
        try:
            if not response.is_success:
                raise await self._status_error(response, deadline)
            yield exchange
        finally:
            if not exchange.handed_off:
                await response.aclose()

    async def _status_error(self, response: httpx.Response, deadline: CallDeadline) -> Exception:
        body = b""
        try:
            async with asyncio.timeout_at(deadline.read_by(asyncio.get_running_loop().time())):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= _MAX_ERROR_BODY:
                        break
        except (TimeoutError, httpx.HTTPError):
            pass  # the status alone says enough; the message is a courtesy
        return self.errors.status(response.status_code, response.headers, body)

    async def _events(
        self, response: httpx.Response, deadline: CallDeadline
    ) -> AsyncGenerator[list[ServerSentEvent], None]:
        """The response body as server-sent events, read within the call's limits: the events
        each network read completes (none: nothing yielded)."""
        decoder = SSEDecoder()
        chunks = _body_chunks(response)
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    if deadline.timed_reads:
                        async with asyncio.timeout_at(deadline.read_by(loop.time())):
                            chunk = await anext(chunks, None)
                    else:
                        chunk = await anext(chunks, None)
                        if loop.time() > deadline.total_at:
                            raise self.errors.timeout(deadline.describe(loop.time()))
                except (TimeoutError, httpx.HTTPError) as exc:
                    if deadline.complete:
                        return  # the answer is whole; the connection is just not reused
                    raise self._failure(exc, deadline, loop.time()) from exc
                if chunk is None:
                    return
                try:
                    events = decoder.feed(chunk)
                except SSEDecodeError as exc:
                    raise self.errors.broken(str(exc)) from exc
                if events:
                    yield events
        finally:
            await chunks.aclose()

    async def _read(self, response: httpx.Response, deadline: CallDeadline) -> bytes:
        """The whole response body, read within the deadline."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline.read_by(loop.time())):
                return await response.aread()
        except (TimeoutError, httpx.HTTPError) as exc:
            raise self._failure(exc, deadline, loop.time()) from exc

    def _failure(
        self,
        exc: TimeoutError | httpx.HTTPError,
        deadline: CallDeadline,
        now: float,
        *,
        mid_stream: bool = True,
    ) -> Exception:
        """The router error for a failed wait: one of our timers (TimeoutError), httpx's idle
        read timeout, or a transport error."""
        if isinstance(exc, TimeoutError):
            return self.errors.timeout(deadline.describe(now))
        if isinstance(exc, httpx.ReadTimeout):
            return self.errors.timeout(deadline.describe(now, silent=True))
        return self.errors.transport(exc, mid_stream=mid_stream)


class _Exchange:
    """One request's response, and whether something else now closes it."""

    __slots__ = ("handed_off", "response")

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.handed_off = False


class _Drain:
    """The rest of a finished answer's body (`reads`, the server-sent events of `response`),
    read apart so that the connection is reused."""

    __slots__ = ("_reads", "_response")

    def __init__(self, reads: AsyncGenerator[Any, None], response: httpx.Response) -> None:
        self._reads = reads
        self._response = response

    async def run(self) -> None:
        """Reads to the end of the body, for at most `_DRAIN_S`, then closes the response.
        Whatever goes wrong only means the connection is not reused."""
        try:
            with suppress(TimeoutError, ProviderError, httpx.HTTPError):
                async with asyncio.timeout(_DRAIN_S):
                    async for _ in self._reads:
                        pass
        finally:
            await self.close()

    async def close(self) -> None:
        """Closes the response: read to its end, its connection goes back to the pool."""
        await self._reads.aclose()
        await self._response.aclose()


def _body_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body as it arrives. An event stream is normally not compressed: then the raw
    chunks skip httpx's decoder and re-chunker."""
    encoding = response.headers.get("content-encoding", "identity")
    chunks = response.aiter_raw() if encoding == "identity" else response.aiter_bytes()
    # Declared an AsyncIterator, it is an async generator: closed by the reader, not by GC.
    return cast(AsyncGenerator[bytes, None], chunks)


def encode_json(body: Any) -> bytes:
    """A request body: compact, and byte-stable for the same input (prompt caches match bytes)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
