"""HTTP/1.1 message framing for the lean transport (`providers.h1`), RFC 9112: the request
message, the response head, how the body ends, and chunked decoding. Pure functions and
classes over bytes; nothing here does I/O."""

from __future__ import annotations

import re

import httpx

__all__ = [
    "CHUNKED",
    "LENGTH",
    "MAX_HEAD",
    "MAX_LINE",
    "UNTIL_CLOSE",
    "ChunkedDecoder",
    "Head",
    "body_framing",
    "request_message",
]

# Longer than any head or chunk line a provider sends: past this the peer is not speaking HTTP.
MAX_HEAD = 64 * 1024
MAX_LINE = 8 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n\0]*))?")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n\0]*?)[ \t]*")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_VALUE = re.compile(rb"[\r\n\0]")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_NO_BODY_STATUSES = frozenset({204, 304})

# Chunked decoder states.
_SIZE, _DATA, _DATA_END, _TRAILERS, _DONE = range(5)
# How a response body ends.
LENGTH, CHUNKED, UNTIL_CLOSE = range(3)


class ChunkedDecoder:
    """`Transfer-Encoding: chunked` decoded as bytes arrive. `feed` takes the next bytes, split
    anywhere, and returns the body bytes they complete (slices of what came, never re-joined).
    `done` is set after the last chunk and the trailers (which are skipped); `excess` if bytes
    followed them. Malformed framing raises ValueError."""

    __slots__ = ("_pending", "_remaining", "_state", "done", "excess")

    def __init__(self) -> None:
        self._state = _SIZE
        # An unfinished size or trailer line, or the first half of a chunk's closing CRLF.
        self._pending = b""
        self._remaining = 0
        self.done = False
        self.excess = False

    def feed(self, data: bytes) -> list[bytes]:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        pieces: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                stop = min(pos + self._remaining, end)
                pieces.append(data[pos:stop])
                self._remaining -= stop - pos
                pos = stop
                if not self._remaining:
                    self._state = _DATA_END
            elif state == _DATA_END:
                crlf = data[pos : pos + 2]
                if not b"\r\n".startswith(crlf):
                    raise ValueError("a chunk's data is not followed by CRLF")
                if len(crlf) < 2:
                    self._pending = crlf
                    break
                pos += 2
                self._state = _SIZE
            elif state == _DONE:
                self.excess = True
                break
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0 or eol - pos > MAX_LINE:
                    if end - pos > MAX_LINE:
                        raise ValueError("a chunk-size or trailer line is too long")
                    self._pending = data[pos:]
                    break
                self._line(data[pos:eol])
                pos = eol + 2
        return pieces

    def _line(self, line: bytes) -> None:
        if self._state == _SIZE:
            self._remaining = _chunk_size(line)
            self._state = _DATA if self._remaining else _TRAILERS
        elif not line:  # the blank line that ends the trailers
            self._state = _DONE
            self.done = True


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip(b" \t")
    if not _CHUNK_SIZE.fullmatch(size):
        raise ValueError(f"malformed chunk-size line {line[:40]!r}")
    return int(size, 16)


class Head:
    """A parsed response head."""

    __slots__ = ("headers", "http11", "reason", "status")

    def __init__(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status_line = _STATUS_LINE.fullmatch(lines[0])
        if status_line is None:
            raise ValueError(f"malformed status line {lines[0][:80]!r}")
        self.http11 = status_line[1] == b"1"
        self.status = int(status_line[2])
        self.reason = status_line[3] or b""
        self.headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            field = _FIELD.fullmatch(line)
            if field is None:
                raise ValueError(f"malformed header line {line[:80]!r}")
            self.headers.append((field[1], field[2]))


def body_framing(head: Head, method: str) -> tuple[int, int, bool]:
    """How the body ends (RFC 9112, section 6.3), its length when it has one, and whether the
    connection may serve another request after it."""
    transfer_encoding = content_length = None
    close = not head.http11
    for name, value in head.headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            transfer_encoding = value.lower()
        elif lowered == b"content-length":
            content_length = value
        elif lowered == b"connection" and b"close" in value.lower():
            close = True
    if method == "HEAD" or head.status in _NO_BODY_STATUSES or head.status < 200:
        return LENGTH, 0, not close
    if transfer_encoding is not None:
        if transfer_encoding.rsplit(b",", 1)[-1].strip() == b"chunked":
            return CHUNKED, 0, not close
        return UNTIL_CLOSE, 0, False
    if content_length is not None:
        # Repeated values (`5, 5`) are allowed when they agree.
        values = {value.strip() for value in content_length.split(b",")}
        length = values.pop() if len(values) == 1 else b""
        if not length.isdigit():
            raise ValueError(f"malformed Content-Length {content_length[:40]!r}")
        return LENGTH, int(length), not close
    return UNTIL_CLOSE, 0, False


def request_message(request: httpx.Request, body: bytes) -> bytes:
    """The request line, headers and body, ready to write. httpx has already added Host and
    Content-Length; a body that was streamed (Transfer-Encoding) goes whole, with its length."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    streamed = False
    for name, value in request.headers.raw:
        if not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
            raise httpx.LocalProtocolError(f"header {name[:40]!r} cannot be sent", request=request)
        if name.lower() == b"transfer-encoding":
            streamed = True
        else:
            lines.append(name + b": " + value)
    if streamed:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"\r\n")
    return b"\r\n".join(lines) + body
