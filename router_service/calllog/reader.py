"""Reads the call log back: daily JSONL files or the Redis Stream, oldest first.

Used by `llm-router export` and `llm-router report`, never by the server. Lines or stream
entries that are not entries this version can read are skipped and counted in `malformed`, so
one damaged line does not lose a day.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

from router_service.calllog.codec import MalformedEntry, loads
from router_service.calllog.entries import LogEntry
from router_service.calllog.sinks import STREAM_FIELD
from router_service.records import CallRecord
from router_service.store.redis import RedisClient

__all__ = ["LogScan", "entry_time"]

_FILE = re.compile(r"^calllog-(\d{4}-\d{2}-\d{2})\.jsonl$")
_PAGE = 1000
_FIELD_BYTES = STREAM_FIELD.encode()


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a binary file, without their ends, as text mode splits them: iterating the
    file splits at "\\n" only, `bytes.splitlines` also at a lone "\\r", like universal newlines."""
    for chunk in chunks:
        yield from chunk.splitlines()


def entry_time(entry: LogEntry) -> float:
    """When the entry happened (Unix time)."""
    return entry.started_at if isinstance(entry, CallRecord) else entry.at


class LogScan:
    """One read of the log; `malformed` counts what could not be read."""

    def __init__(self, *, since: float | None = None) -> None:
        self.since = since
        self.malformed = 0

    def _keep(self, text: str | bytes) -> LogEntry | None:
        try:
            entry = loads(text)
        except MalformedEntry:
            self.malformed += 1
            return None
        if self.since is not None and entry_time(entry) < self.since:
            return None
        return entry

    def jsonl(self, directory: Path) -> Iterator[LogEntry]:
        """The entries of `directory`'s `calllog-YYYY-MM-DD.jsonl` files, day by day."""
        if not directory.is_dir():
            raise FileNotFoundError(f"no call log directory {directory}")
        days = sorted(
            (match.group(1), path)
            for path in directory.iterdir()
            if (match := _FILE.match(path.name)) is not None
        )
        for _, path in days:
            # Entries are written after they happen: a file last written before `since` holds
            # nothing newer than it.
            if self.since is not None and path.stat().st_mtime < self.since:
                continue
            with path.open("rb") as chunks:
                for line in _lines(chunks):
                    if (entry := self._keep_line(line)) is not None:
                        yield entry

    def _keep_line(self, line: bytes) -> LogEntry | None:
        # Decoded line by line, not by a text-mode file: one invalid byte then costs its own
        # line, not the rest of the day.
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.malformed += 1
            return None
        return self._keep(text) if text.strip() else None

    async def stream(self, redis: RedisClient, key: str) -> AsyncIterator[LogEntry]:
        """The entries of the Redis Stream `key`, read a page at a time."""
        start = "-" if self.since is None else f"{int(self.since * 1000)}-0"
        while True:
            page = await redis.xrange(key, min=start, max="+", count=_PAGE) or []
            for _, fields in page:
                data = (fields or {}).get(_FIELD_BYTES)
                if data is None:
                    self.malformed += 1
                elif (entry := self._keep(data)) is not None:
                    yield entry
            if len(page) < _PAGE:
                return
            last_id = page[-1][0]
            # Exclusive start: the next page begins after the last id read.
            start = "(" + (last_id.decode() if isinstance(last_id, bytes) else str(last_id))
