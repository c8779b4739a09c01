"""The SSE decoder against the event-stream rules (WHATWG HTML, 9.2.6), and against any split
of its input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_service.providers.sse import ServerSentEvent, SSEDecodeError, SSEDecoder


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_openai_style_data_only_events() -> None:
    stream = b'data: {"a":1}\n\ndata: {"a":2}\n\ndata: [DONE]\n\n'
    assert decode(stream) == [
        ServerSentEvent("message", b'{"a":1}'),
        ServerSentEvent("message", b'{"a":2}'),
        ServerSentEvent("message", b"[DONE]"),
    ]


def test_anthropic_style_named_events() -> None:
    stream = (
        b'event: message_start\ndata: {"type":"message_start"}\n\n'
        b'event: ping\ndata: {"type": "ping"}\n\n'
    )
    assert [(e.event, e.data) for e in decode(stream)] == [
        ("message_start", b'{"type":"message_start"}'),
        ("ping", b'{"type": "ping"}'),
    ]


def test_line_endings_comments_and_multiline_data() -> None:
    stream = b": keep-alive\r\nevent: a\rdata: first\r\ndata:second\ndata:  third\r\n\r\n"
    # One leading space is dropped, the second is data; data lines join with LF.
    assert decode(stream) == [ServerSentEvent("a", b"first\nsecond\n third")]


def test_event_name_does_not_leak_into_the_next_event() -> None:
    assert decode(b"event: x\ndata: 1\n\ndata: 2\n\n") == [
        ServerSentEvent("x", b"1"),
        ServerSentEvent("message", b"2"),
    ]
    # A blank line with no data dispatches nothing and forgets the name.
    assert decode(b"event: x\n\ndata: 3\n\n") == [ServerSentEvent("message", b"3")]


def test_fields_without_colon_id_retry_and_unknown_fields() -> None:
    assert decode(b"id: 7\nretry: 10\nfoo: bar\ndata\n\n") == [ServerSentEvent("message", b"")]


def test_only_a_block_without_data_fields_dispatches_nothing() -> None:
    # "Dispatch the event" stops when the data buffer is empty; each `data` field appends its
    # value and an LF to it, so `data:` with no value leaves "\n", and the event is dispatched
    # with empty data (the web-platform tests' eventsource/format-field-data stream).
    assert decode(b"data:\n\ndata\ndata\n\ndata:test\n\n") == [
        ServerSentEvent("message", b""),
        ServerSentEvent("message", b"\n"),
        ServerSentEvent("message", b"test"),
    ]
    # Only blocks with no `data` field at all (names, ids, comments) dispatch nothing.
    assert decode(b"event: ping\n\nid: 1\n\n: hi\n\nevent: ping\ndata:\n\n") == [
        ServerSentEvent("ping", b"")
    ]


def test_mixed_line_ends_and_a_last_lone_cr() -> None:
    # eventsource/format-newlines: the CR that ends the stream ends the blank line.
    assert decode(b"data:test\r\ndata\ndata:test\r\n\r") == [
        ServerSentEvent("message", b"test\n\ntest")
    ]


def test_byte_order_mark_is_dropped_even_split() -> None:
    assert decode(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == [ServerSentEvent("message", b"x")]
    # ... but only at the very start: later it is part of a field name that means nothing.
    assert decode(b"data: x\n\n\xef\xbb\xbfdata: y\n\n") == [ServerSentEvent("message", b"x")]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    # CR ends a chunk and LF starts the next: one line end, not a blank line between.
    assert decode(b"data: x\r", b"\ndata: y\r", b"\n\r\n") == [ServerSentEvent("message", b"x\ny")]


def test_split_utf8_character_survives() -> None:
    encoded = 'data: {"text":"naïve ☕"}\n\n'.encode()
    cut = encoded.index("☕".encode()) + 1
    events = decode(encoded[:cut], encoded[cut:])
    assert events[0].data.decode() == '{"text":"naïve ☕"}'


def test_unterminated_event_is_not_dispatched() -> None:
    assert decode(b"data: partial\n") == []


def test_oversized_line_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    with pytest.raises(SSEDecodeError):
        decoder.feed(b"data: " + b"x" * 100)
    decoder = SSEDecoder(max_event_bytes=64)
    with pytest.raises(SSEDecodeError):
        decoder.feed(b"data: " + b"x" * 40 + b"\ndata: " + b"y" * 40 + b"\n")


# --- any split of a stream decodes to the same events ------------------------------------

line_ends = st.sampled_from([b"\n", b"\r\n", b"\r"])
text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
    max_size=20,
)
# A data line as sent: `data: value`, `data:value`, or `data` (no colon: the value is empty).
data_lines = st.lists(st.tuples(text, st.sampled_from(["data: ", "data:", "data"])), max_size=3)
events = st.tuples(
    # The `event:` field: none, an empty one (the type is then "message" too), or a name.
    st.one_of(st.none(), st.sampled_from(["", "message_start", "content_block_delta", "ping"])),
    data_lines,
    st.booleans(),  # a comment before the event
    st.booleans(),  # `id:`, `retry:` and an unknown field among its lines
)
Event = tuple[str | None, list[tuple[str, str]], bool, bool]


def data_value(value: str, form: str) -> str:
    """The value a data line gives: after `data:`, one leading space is dropped."""
    if form == "data":
        return ""
    return value[1:] if form == "data:" and value.startswith(" ") else value


def serialize(
    stream: list[Event], ends: list[bytes], bom: bool
) -> tuple[bytes, list[ServerSentEvent]]:
    out, expected, i = b"\xef\xbb\xbf" if bom else b"", [], 0

    def end() -> bytes:
        nonlocal i
        i += 1
        chosen = ends[i % len(ends)]
        # CR then LF would be one CRLF line end: the stream would say something else.
        return b"\r\n" if chosen == b"\n" and out.endswith(b"\r") else chosen

    for name, lines, comment, other_fields in stream:
        if comment:
            out += b": comment" + end()
        if name is not None:
            out += b"event: " + name.encode() + end()
        if other_fields:
            out += b"id: 7" + end() + b"retry: 10" + end() + b"foo: bar" + end()
        for value, form in lines:
            out += form.encode() + (b"" if form == "data" else value.encode()) + end()
        out += end()
        # No data field, no event (its name is forgotten); otherwise one, even with empty data.
        if lines:
            data = "\n".join(data_value(value, form) for value, form in lines)
            expected.append(ServerSentEvent(name or "message", data.encode()))
    return out, expected


@given(
    st.lists(events, min_size=1, max_size=8),
    st.lists(line_ends, min_size=1, max_size=4),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_chunking_gives_the_same_events(
    stream: list[Event], ends: list[bytes], bom: bool, cuts: list[int]
) -> None:
    data, expected = serialize(stream, ends, bom)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert decode(*chunks) == expected
    assert decode(*(data[i : i + 1] for i in range(len(data)))) == expected


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_arbitrary_bytes_never_crash(data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    for event in decode(*chunks):
        assert isinstance(event.data, bytes)
