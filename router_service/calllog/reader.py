"""Reads the call log back: daily JSONL files or the Redis Stream, oldest first.

Used by `llm-router export` and `llm-router report`, never by the server. Lines or stream
entries that are not entries this version can read are skipped and counted in `malformed`, so
one damaged line does not lose a day. A scan can tell a progress bar how much it has read, a
page or so many lines at a time (never per entry: the loop is hot), against a total it knows
up front: the files' bytes, or the stream's length.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from router_service.calllog.codec import MalformedEntry, loads
from router_service.calllog.entries import LogEntry
from router_service.calllog.sinks import STREAM_FIELD
from router_service.records import CallRecord
from router_service.store.redis import RedisClient

__all__ = ["LogScan", "Progress", "entry_time"]

_FILE = re.compile(r"^calllog-(\d{4}-\d{2}-\d{2})\.jsonl$")
_PAGE = 1000
# A JSONL read reports its progress every so many lines; a stream read once a page.
_LINES_PER_REPORT = 1000
_FIELD_BYTES = STREAM_FIELD.encode()


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a binary file, without their ends, as text mode splits them: iterating the
    file splits at "\\n" only, `bytes.splitlines` also at a lone "\\r", like universal newlines."""
    for chunk in chunks:
        yield from chunk.splitlines()


def entry_time(entry: LogEntry) -> float:
    """When the entry happened (Unix time)."""
    return entry.started_at if isinstance(entry, CallRecord) else entry.at


class Progress(Protocol):
    """Told how much more of the log was read (a progress bar: `training.progress.meter`)."""

    def update(self, n: int) -> object: ...


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

    def day_files(self, directory: Path) -> list[Path]:
        """`directory`'s `calllog-YYYY-MM-DD.jsonl` files that `jsonl` reads, oldest day first."""
        if not directory.is_dir():
            raise FileNotFoundError(f"no call log directory {directory}")
        days = sorted(
            (match.group(1), path)
            for path in directory.iterdir()
            if (match := _FILE.match(path.name)) is not None
        )
        # Entries are written after they happen: a file last written before `since` holds
        # nothing newer than it.
        return [
            path for _, path in days if self.since is None or path.stat().st_mtime >= self.since
        ]

    def jsonl_size(self, directory: Path) -> int:
        """How many bytes `jsonl` reads: the size of the files it reads."""
        return sum(path.stat().st_size for path in self.day_files(directory))

    def jsonl(self, directory: Path, progress: Progress | None = None) -> Iterator[LogEntry]:
        """The entries of `directory`'s day files, day by day; `progress` is told the bytes
        read."""
        for path in self.day_files(directory):
            with path.open("rb") as chunks:
                reported = 0
                for count, line in enumerate(_lines(chunks), 1):
                    if (entry := self._keep_line(line)) is not None:
                        yield entry
                    if progress is not None and count % _LINES_PER_REPORT == 0:
                        position = chunks.tell()
                        progress.update(position - reported)
                        reported = position
                if progress is not None:
                    progress.update(chunks.tell() - reported)

    def _keep_line(self, line: bytes) -> LogEntry | None:
        # Decoded line by line, not by a text-mode file: one invalid byte then costs its own
        # line, not the rest of the day.
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.malformed += 1
            return None
        return self._keep(text) if text.strip() else None

    async def stream_length(self, redis: RedisClient, key: str) -> int | None:
        """How many entries `stream` reads: the stream's length (XLEN, O(1)) when the scan
        reads all of it; None with `since`, which Redis cannot count without reading."""
        return None if self.since is not None else int(await redis.xlen(key))

    async def stream(
        self, redis: RedisClient, key: str, progress: Progress | None = None
    ) -> AsyncIterator[LogEntry]:
        """The entries of the Redis Stream `key`, read a page at a time; `progress` is told
        the entries read."""
        start = "-" if self.since is None else f"{int(self.since * 1000)}-0"
        while True:
            page = await redis.xrange(key, min=start, max="+", count=_PAGE) or []
            for _, fields in page:
                data = (fields or {}).get(_FIELD_BYTES)
                if data is None:
                    self.malformed += 1
                elif (entry := self._keep(data)) is not None:
                    yield entry
            if progress is not None:
                progress.update(len(page))
            if len(page) < _PAGE:
                return
            last_id = page[-1][0]
            # Exclusive start: the next page begins after the last id read.
            start = "(" + (last_id.decode() if isinstance(last_id, bytes) else str(last_id))
