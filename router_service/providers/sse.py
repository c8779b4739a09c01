"""Incremental Server-Sent Events decoding: bytes in, complete events out.

Both streaming wire formats (OpenAI chat completions, Anthropic Messages) are SSE. The decoder
follows the WHATWG event-stream rules: lines end in CRLF, LF or CR; `:` starts a comment;
several `data:` lines join with LF; a blank line dispatches the event; a leading BOM is dropped.

"Dispatch the event" returns without dispatching when the data buffer is empty. Every `data`
field appends its value and an LF to that buffer, so it is empty exactly when no `data` field
came: a block of only `event:`, `id:` or comments dispatches nothing (and its event name is
forgotten), while `data:` with no value dispatches an event whose data is empty, as the
standard's own example and the web-platform tests (eventsource/format-field-data) have it. That
such an event carries no JSON is for the wire formats to say (`HttpEndpoint` skips it).

It works on bytes and never decodes text: a network chunk may end anywhere (inside a UTF-8
character, between CR and LF, in the middle of a field name) and only complete events leave
the decoder, whose data the adapters hand straight to `json.loads` (which takes bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecodeError", "SSEDecoder", "ServerSentEvent"]

_BOM = b"\xef\xbb\xbf"
_COLON = 0x3A
# A longer line or event means the upstream is not speaking SSE (or is hostile): stop buffering.
DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024


class SSEDecodeError(Exception):
    """The byte stream is not an event stream the decoder will buffer."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    # The `event:` field, or "message" when the stream names none.
    event: str
    # The `data:` lines joined with LF, undecoded.
    data: bytes


class SSEDecoder:
    """Feed it the response body chunk by chunk; it returns the events each chunk completes."""

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        # The unterminated tail of the previous chunk.
        self._pending = b""
        # The previous chunk ended in CR: an LF opening the next one belongs to it.
        self._skip_lf = False
        self._bom_checked = False
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._event = b""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        for line in self._complete_lines(chunk):
            if not line:
                # Dispatch, unless the data buffer is empty: no `data` field came (see above).
                if self._data:
                    events.append(self._dispatch())
                else:
                    self._event = b""
            elif line[0] != _COLON:
                self._field(line)
        return events

    def _complete_lines(self, chunk: bytes) -> list[bytes]:
        """The lines `chunk` completes, without their line ends; keeps the unfinished tail."""
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if self._pending:
            chunk = self._pending + chunk
            self._pending = b""
        if not self._bom_checked:
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._pending = chunk
                return []
            self._bom_checked = True
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if not chunk:
            return []
        lines = chunk.splitlines()
        last = chunk[-1]
        if last == 0x0D:
            self._skip_lf = True
        elif last != 0x0A:
            self._pending = lines.pop()
            if len(self._pending) > self._max_event_bytes:
                raise SSEDecodeError(f"an event-stream line exceeds {self._max_event_bytes} bytes")
        return lines

    def _field(self, line: bytes) -> None:
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_bytes += len(value)
            if self._data_bytes > self._max_event_bytes:
                raise SSEDecodeError(f"an event exceeds {self._max_event_bytes} bytes")
        elif name == b"event":
            self._event = value
        # `id` and `retry` steer browser reconnection, which a provider call never does.

    def _dispatch(self) -> ServerSentEvent:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = self._event.decode("utf-8", "replace") if self._event else "message"
        self._data = []
        self._data_bytes = 0
        self._event = b""
        return ServerSentEvent(event, data)
