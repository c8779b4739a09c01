"""The call log's writer: a bounded queue on the request path, batches written off it.

`CallLog.observe` (a `CallObserver`) and `CallLog.submit` only append to an in-memory queue and
return; they never wait and never raise. A background task takes what has accumulated (after
letting a batch fill for `flush_interval_s`) and hands it to the sink in batches of at most
`batch_size`. A failed batch is retried with backoff until the sink takes it (a Redis failover
or a restart loses nothing); meanwhile new entries wait in the queue, and once it is full
(`call_log.queue_size`) new entries are dropped. Drops are counted (`CallLog.dropped`), which is
what an SRE watches when a sink stays down. `aclose` writes what is still queued, within a
deadline, before the server exits, trying each batch once more; what it cannot write is
counted as dropped.

Records of requests refused as invalid (no decision) are kept to `INVALID_PER_MINUTE` per app
per replica: invalid requests pass no rate limit, and a client retrying a malformed request in
a loop would otherwise push every app's cost records out of the trimmed stream. The rest are
dropped and counted (`invalid_flood`); the router's statistics still count every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from router_service.calllog.entries import LogEntry
from router_service.calllog.owners import RequestOwners
from router_service.calllog.sinks import Sink, SinkError
from router_service.records import CallRecord

__all__ = ["Backoff", "CallLog"]

log = logging.getLogger(__name__)

# Why entries were dropped (the keys of `CallLog.dropped`).
QUEUE_FULL = "queue_full"
SINK_ERROR = "sink_error"
CLOSED = "closed"
INVALID_FLOOD = "invalid_flood"

# Records of invalid requests kept per app per minute, per replica.
INVALID_PER_MINUTE = 60


@dataclass(frozen=True, slots=True)
class Backoff:
    """How often a failed batch is tried (None: until the sink takes it), and how long to wait
    between tries."""

    attempts: int | None = None
    base_s: float = 0.2
    cap_s: float = 2.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap_s, self.base_s * 2 ** (failures - 1)))


DEFAULT_BACKOFF = Backoff()


class CallLog:
    """Queues call-log entries and writes them in batches on a background task."""

    def __init__(
        self,
        sink: Sink,
        owners: RequestOwners,
        *,
        capacity: int,
        batch_size: int,
        flush_interval_s: float,
        backoff: Backoff = DEFAULT_BACKOFF,
        invalid_per_minute: int = INVALID_PER_MINUTE,
    ) -> None:
        self._sink = sink
        self.owners = owners
        self._capacity = capacity
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._backoff = backoff
        self._pending: deque[LogEntry] = deque()
        self._wakeup = asyncio.Event()
        # Set by `aclose`: ends a batch's wait to fill at once.
        self._close_requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._sink_failing = False
        self.written = 0
        self._dropped = {QUEUE_FULL: 0, SINK_ERROR: 0, CLOSED: 0, INVALID_FLOOD: 0}
        self._invalid_per_minute = invalid_per_minute
        # Per app: the minute (monotonic, in whole minutes) and its invalid records so far.
        self._invalid: dict[str, tuple[int, int]] = {}

    @property
    def dropped(self) -> Mapping[str, int]:
        """Entries lost so far, by reason."""
        return dict(self._dropped)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="call-log writer")

    def observe(self, record: CallRecord) -> None:
        if record.decision is not None:
            # Feedback is for calls that were routed; a request refused as invalid is not
            # remembered (it would only push routed calls out of the bounded memory).
            self.owners.remember(record.app, record.request_id)
        elif not self._admit_invalid(record.app):
            self._dropped[INVALID_FLOOD] += 1
            return
        self.submit(record)

    def _admit_invalid(self, app: str) -> bool:
        """Whether `app` may log another invalid request this minute."""
        minute = int(time.monotonic() // 60)
        seen, count = self._invalid.get(app, (minute, 0))
        if seen != minute:
            count = 0
        if count >= self._invalid_per_minute:
            return False
        self._invalid[app] = (minute, count + 1)
        return True

    def submit(self, entry: LogEntry) -> bool:
        """Queue `entry`; False (and counted) when it had to be dropped."""
        if self._closing:
            self._dropped[CLOSED] += 1
            return False
        if len(self._pending) >= self._capacity:
            self._dropped[QUEUE_FULL] += 1
            return False
        self._pending.append(entry)
        self._wakeup.set()
        return True

    async def _run(self) -> None:
        pending = self._pending
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._closing and len(pending) < self._batch_size:
                # Let a batch gather: one write per interval instead of one per call.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._close_requested.wait(), self._flush_interval_s)
            while pending:
                count = min(self._batch_size, len(pending))
                await self._write([pending.popleft() for _ in range(count)])
            if self._closing:
                return

    async def _write(self, batch: list[LogEntry]) -> None:
        failures = 0
        while True:
            try:
                await self._sink.write(batch)
            except asyncio.CancelledError:
                # Shutdown ran out of time mid-batch.
                self._dropped[CLOSED] += len(batch)
                raise
            except SinkError as exc:
                failures += 1
                if not self._sink_failing:
                    self._sink_failing = True
                    log.warning("call log: %s; retrying until it is writable again", exc)
                attempts = self._backoff.attempts
                if self._closing or (attempts is not None and failures >= attempts):
                    # At shutdown each batch gets one more try, not a wait for the sink.
                    self._dropped[SINK_ERROR] += len(batch)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._close_requested.wait(), self._backoff.delay(failures)
                    )
            else:
                if self._sink_failing:
                    self._sink_failing = False
                    log.warning("call log: writable again; dropped so far: %s", self.dropped)
                self.written += len(batch)
                return

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for at most `timeout_s`), then stop; the rest is dropped."""
        self._closing = True
        self._close_requested.set()
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout_s)
            except TimeoutError:
                log.warning("call log: %d entries not written at shutdown", len(self._pending))
        self._dropped[CLOSED] += len(self._pending)
        self._pending.clear()
        await self._sink.aclose()
