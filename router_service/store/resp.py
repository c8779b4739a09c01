"""A lean Redis connection for the request path: one pipelined connection, replies in order.

redis-py's asyncio client spends about 120 µs of Python on every command here (a connection
checked out of the pool and back, the command packed, its reader polled), three times what the
round trip itself costs and more than Redis spends running a budget script. The request path
sends a few commands per call (rate-limit take, budget reserve and settle, cache and warmth
reads), so `RedisStore` sends them over this instead:

- one TCP connection per process, opened on first use and again after a failure;
- commands written the moment they are made, so concurrent callers pipeline on the one
  connection and never wait for each other's round trip (Redis answers in order);
- replies parsed by hiredis (already a redis-py dependency) in `data_received` and handed to
  the waiting callers in order; a caller that gave up leaves its reply to be dropped.

Errors are redis-py's exception types, so callers handle both clients alike: `ConnectionError`
when the connection fails or closes, `TimeoutError` after `timeout_s` (and the connection is
replaced: one that stops answering may never answer again), `ResponseError` (`NoScriptError`,
`ReadOnlyError`, ...) for error replies. Everything else (pipelines, streams, admin commands,
Redis Cluster, TLS, Unix sockets) stays on redis-py; `for_client` says when this applies.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
from collections import deque
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import (
    ConnectionError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)

__all__ = ["RespConnection", "ScriptSource"]

Arg = str | bytes | int | float

_ERRORS: dict[str, type[ResponseError]] = {"NOSCRIPT": NoScriptError, "READONLY": ReadOnlyError}


class ScriptSource:
    """A Lua script and its SHA1, as EVALSHA names it."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def _pack(args: tuple[Arg, ...]) -> bytes:
    return hiredis.pack_command(args)  # type: ignore[no-any-return, arg-type]


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False
        # Reads so far: tells a caller who gave up whether the connection still answers.
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += 1
        reader = self._reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        assert self._transport is not None
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._transport.write(payload)
        return waiter

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()


class RespConnection:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float | None = None,
        connect_timeout_s: float | None = None,
    ) -> None:
        self._address = (host, port)
        self._setup: list[tuple[Arg, ...]] = []
        if password is not None:
            self._setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._setup.append(("SELECT", db))
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s or timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    @classmethod
    def for_client(cls, client: object) -> RespConnection | None:
        """A connection to the same server, database and credentials as a standalone redis-py
        client over plain TCP; None for anything else (Cluster, TLS, Unix socket, credential
        providers), which then stays on redis-py."""
        if not isinstance(client, Redis):
            return None
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if pool.connection_class is not Connection or kwargs.get("credential_provider"):
            return None
        return cls(
            kwargs.get("host", "localhost"),
            int(kwargs.get("port", 6379)),
            db=int(kwargs.get("db") or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            timeout_s=kwargs.get("socket_timeout"),
            connect_timeout_s=kwargs.get("socket_connect_timeout"),
        )

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, protocol = await loop.create_connection(_Protocol, *self._address)
                try:
                    for command in self._setup:
                        reply = await protocol.send(_pack(command))
                        if isinstance(reply, hiredis.ReplyError):
                            raise ConnectionError(f"Redis refused {command[0]!r}: {reply}")
                except BaseException:
                    protocol.abort()
                    raise
        except OSError as exc:
            raise ConnectionError(f"cannot connect to Redis at {self._address}: {exc}") from exc
        except builtins.TimeoutError as exc:
            raise TimeoutError(f"connecting to Redis at {self._address} timed out") from exc
        return protocol

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        connecting = self._connecting
        try:
            protocol = await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
        self._protocol = protocol
        return protocol

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (bytes, int, list, or None)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connection()
        waiter = protocol.send(_pack(args))
        if self._timeout_s is None:
            reply = await waiter
        else:
            received, sent_at = protocol.received, asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(self._timeout_s):
                    reply = await waiter
            except builtins.TimeoutError:
                # A connection that stops answering may never answer again: start afresh.
                protocol.abort()
                raise TimeoutError(f"Redis did not answer {args[0]!r} in time") from None
            except asyncio.CancelledError:
                # The caller's own time limit (the store's operation timeout) came first. The
                # same rule: a connection silent since the command went out is replaced.
                waited = asyncio.get_running_loop().time() - sent_at
                if protocol.received == received and waited >= self._timeout_s / 2:
                    protocol.abort()
                raise
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            raise _ERRORS.get(message.split(" ", 1)[0], ResponseError)(message)
        return reply

    async def evalsha(self, script: ScriptSource, keys: list[str], args: list[Arg]) -> Any:
        """Run a script by its SHA, loading it with EVAL the first time Redis lacks it."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        if self._protocol is not None:
            self._protocol.abort()
            self._protocol = None
