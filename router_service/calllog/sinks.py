"""Where call-log batches go: JSONL files (embedded) or a Redis Stream (with Redis).

A sink writes one batch at a time and raises `SinkError` when it cannot; the writer
(`calllog.writer`) decides about retrying and counting. Entries are encoded to JSON in a worker
thread, so a large batch never holds up the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from redis.exceptions import RedisError

from router_service.calllog.codec import dumps
from router_service.calllog.entries import LogEntry
from router_service.calllog.owners import owner_key
from router_service.records import CallRecord
from router_service.store.redis import RedisClient

__all__ = ["JsonlSink", "RedisStreamSink", "Sink", "SinkError", "jsonl_name"]

# The one field of a stream entry: the entry's JSON.
STREAM_FIELD = "e"


class SinkError(Exception):
    """A batch could not be written."""


class Sink(Protocol):
    async def write(self, batch: Sequence[LogEntry]) -> None: ...

    async def aclose(self) -> None: ...


def jsonl_name(day: str) -> str:
    """The file of one UTC day (`YYYY-MM-DD`)."""
    return f"calllog-{day}.jsonl"


class JsonlSink:
    """Appends to `<directory>/calllog-YYYY-MM-DD.jsonl`, a new file each UTC day.

    The directory and files are private to the service's user: records may hold prompt text.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._day = ""
        self._fd: int | None = None

    def _file_for_today(self) -> int:
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        if self._fd is None or day != self._day:
            self._close()
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self._directory / jsonl_name(day)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._day = day
        return self._fd

    def _write(self, batch: Sequence[LogEntry]) -> None:
        data = "".join(dumps(entry) + "\n" for entry in batch).encode()
        try:
            fd = self._file_for_today()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            self._close()
            raise SinkError(f"cannot write the call log in {self._directory}: {exc}") from exc

    async def write(self, batch: Sequence[LogEntry]) -> None:
        await asyncio.to_thread(self._write, batch)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def aclose(self) -> None:
        self._close()


class RedisStreamSink:
    """`XADD <stream> MAXLEN ~ <max_len> * e <json>` per entry, one pipeline per batch; for each
    cost record of a routed call (not one refused as invalid) also the request's owner key (see
    `calllog.owners`), expiring after the feedback window."""

    def __init__(
        self, redis: RedisClient, stream: str, *, max_len: int, owner_ttl_s: float
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._max_len = max_len
        self._owner_ttl_ms = int(owner_ttl_s * 1000)

    def _encode(self, batch: Sequence[LogEntry]) -> list[str]:
        return [dumps(entry) for entry in batch]

    async def write(self, batch: Sequence[LogEntry]) -> None:
        lines = await asyncio.to_thread(self._encode, batch)
        pipe = self._redis.pipeline(transaction=False)
        for entry, line in zip(batch, lines, strict=True):
            pipe.xadd(self._stream, {STREAM_FIELD: line}, maxlen=self._max_len, approximate=True)
            if isinstance(entry, CallRecord) and entry.decision is not None:
                key = owner_key(self._stream, entry.app, entry.request_id)
                pipe.set(key, b"1", px=self._owner_ttl_ms)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise SinkError(f"cannot write the call log to Redis: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """The Redis client belongs to the server; nothing of the sink's own to release."""
