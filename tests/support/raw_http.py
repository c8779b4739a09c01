"""A loopback HTTP server that answers with scripted raw bytes, for testing an HTTP client's
framing, keep-alive and failure handling exactly.

Each request (head and Content-Length body) gets the next scripted answer, a list of steps:
bytes are written (and flushed: separate writes arrive as separate reads on loopback when
a pause lies between them), a float pauses that many seconds, an `asyncio.Event` is waited
for, `CLOSE` closes the connection and `UNTIL_CLIENT_LEAVES` waits until the client closes
it. The server counts the connections it accepted and the ones the client closed, and
records every request it read.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Final

__all__ = ["CLOSE", "UNTIL_CLIENT_LEAVES", "RawServer", "Step", "raw_server"]

CLOSE: Final = "close"
UNTIL_CLIENT_LEAVES: Final = "until-client-leaves"

Step = bytes | float | asyncio.Event | str


@dataclass
class RawServer:
    answers: deque[list[Step]]
    port: int = 0
    connections: int = 0
    # Connections on which the server read an end of file: the client closed them.
    closed_by_client: int = 0
    requests: list[bytes] = field(default_factory=list)
    # The TLS server names (SNI) and ALPN protocols of the connections, in order.
    server_names: list[str | None] = field(default_factory=list)
    alpn: list[str | None] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str = "/", *, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        tls = writer.get_extra_info("ssl_object")
        if tls is not None:
            self.alpn.append(tls.selected_alpn_protocol())
        try:
            while await self._answer(reader, writer):
                pass
        except ConnectionError:
            self.closed_by_client += 1
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and write its answer; False when the connection is over."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_client += 1
            return False
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self.requests.append(head + await reader.readexactly(length))
        for step in self.answers.popleft():
            if isinstance(step, bytes):
                writer.write(step)
                await writer.drain()
            elif isinstance(step, float):
                await asyncio.sleep(step)
            elif isinstance(step, asyncio.Event):
                await step.wait()
            elif step == CLOSE:
                return False
            elif step == UNTIL_CLIENT_LEAVES:
                while await reader.read(4096):
                    pass
                self.closed_by_client += 1
                return False
        return True

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


@asynccontextmanager
async def raw_server(
    *answers: list[Step], tls: ssl.SSLContext | None = None
) -> AsyncIterator[RawServer]:
    state = RawServer(deque(answers))
    if tls is not None:
        tls.sni_callback = lambda _ssl, name, _ctx: state.server_names.append(name)
    server = await asyncio.start_server(state.serve, "127.0.0.1", 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await state.stop()
        await server.wait_closed()
