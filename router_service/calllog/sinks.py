"""Where call-log batches go: JSONL files (embedded) or a Redis Stream (with Redis).

A sink writes one batch at a time and raises `SinkError` when it cannot; the writer
(`calllog.writer`) decides about retrying and counting. Entries are encoded to JSON in a worker
thread, so a large batch never holds up the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
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
    """Appends each batch to the stream (`XADD <stream> MAXLEN ~ <max_len> * e <json>` per
    entry) in one script, then, for each cost record of a routed call (not one refused as
    invalid), sets the request's owner key (see `calllog.owners`), expiring after the feedback
    window.

    A batch is written once however often it is sent. The writer retries a batch until the
    sink takes it, and a batch whose reply was lost (a timeout while Redis was frozen or slow:
    Redis still runs it when it resumes) would otherwise be added again, giving its calls two
    cost records each. So the script first sets a marker named by the batch's digest, beside
    the stream (in its Cluster slot), for `BATCH_MARKER_TTL_S`, and adds nothing when the
    marker is already there. The owner keys are plain SETs: sent again, they change nothing.
    """

    def __init__(
        self, redis: RedisClient, stream: str, *, max_len: int, owner_ttl_s: float
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._max_len = max_len
        self._owner_ttl_ms = int(owner_ttl_s * 1000)
        self._append = redis.register_script(_APPEND)

    def _encode(self, batch: Sequence[LogEntry]) -> tuple[list[str], str]:
        lines = [dumps(entry) for entry in batch]
        digest = hashlib.sha256()
        for line in lines:
            digest.update(line.encode())
            digest.update(b"\n")
        return lines, digest.hexdigest()

    async def write(self, batch: Sequence[LogEntry]) -> None:
        lines, digest = await asyncio.to_thread(self._encode, batch)
        owners = [
            owner_key(self._stream, entry.app, entry.request_id)
            for entry in batch
            if isinstance(entry, CallRecord) and entry.decision is not None
        ]
        try:
            await self._append(
                keys=[self._stream, _beside(self._stream, f"batch:{digest}")],
                args=[self._max_len, _BATCH_MARKER_TTL_MS, *lines],
            )
            if owners:
                pipe = self._redis.pipeline(transaction=False)
                for key in owners:
                    pipe.set(key, b"1", px=self._owner_ttl_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise SinkError(f"cannot write the call log to Redis: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """The Redis client belongs to the server; nothing of the sink's own to release."""


# How long a written batch's marker stays: a retry of the batch comes within the writer's
# backoff (2 s at most) of Redis answering this replica again.
BATCH_MARKER_TTL_S = 3600
_BATCH_MARKER_TTL_MS = BATCH_MARKER_TTL_S * 1000

# KEYS: the stream, the batch's marker. ARGV: max length, marker TTL ms, the entries' JSON.
# Returns the number of entries added (0: the batch was written before).
_APPEND = f"""
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 0 end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', '{STREAM_FIELD}', ARGV[i])
end
return #ARGV - 2
"""


def _beside(stream: str, name: str) -> str:
    """`<stream>:<name>`, in the stream's Redis Cluster slot (a script touches both): the key
    carries the stream's hash tag, or, when the stream has none, the stream's name as its tag.
    (A stream named with a `}` but no hash tag has no such key: on a Cluster the script is then
    refused with CROSSSLOT, and the writer logs that it cannot write.)"""
    start = stream.find("{")
    end = stream.find("}", start + 1) if start >= 0 else -1
    if end > start + 1:
        return f"{stream}:{name}"
    return f"{{{stream}}}:{name}"
