"""Spans to OTLP bytes, written directly in protobuf wire format, and the exporter that uses them.

The SDK's OTLP exporter encodes a batch with `encode_spans`, which builds a protobuf object from
Python for every span, status, event, link, `KeyValue` and `AnyValue`, and hashes each span's
`Resource` (a JSON dump of its attributes) to group the spans: about 100 µs of CPU per span
of the router's on a 2-core machine (200 µs for its server and chat spans, 50 µs for one with
no attributes), and a routed call exports 5 spans. `encode_spans` below writes the same
`ExportTraceServiceRequest` as bytes instead (varints, length-prefixed fields, fixed64 times,
fixed32 flags), remembering the bytes of attributes that repeat, for about a quarter of the
CPU (benchmarks/bench_otlp_encoding.py), and `FastOTLPSpanExporter` parses them back into the
message the gRPC stub sends (upb parses in C: about 1 µs a span).

The bytes mirror the SDK's encoder (`opentelemetry.exporter.otlp.proto.common._internal`,
1.45) field by field, which the tests check by comparing the two messages:

- spans grouped by resource, then by instrumentation scope, in order of first appearance, as
  the SDK's nested dicts group them (equal resources share a group, as they do there);
- proto3 rules: a scalar at its zero value is not written (an empty string, a zero count), a
  message field (`resource`, `scope`, `status`, a `KeyValue`'s `value`) always is, and so is
  an `AnyValue`'s oneof member, even when it is `""`, `0` or `False`;
- attribute values as `_encode_value` has them: `None` is an empty `AnyValue`, `bool` before
  `int`, sequences (other than `str` and `bytes`) to `array_value`, mappings to
  `kvlist_value` with `str()` keys; what `encode_spans` would reject or drop (an int outside
  int64, an unknown type) raises `ValueError` here, and the exporter falls back to the SDK's
  encoder for that batch, so the exported result is theirs in every case;
- span and link flags carry "has is-remote", and "is remote" when the parent (or the linked
  context) is remote; a link's trace state is not exported, as the SDK does not export it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PB2Span
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceState

__all__ = ["FastOTLPSpanExporter", "encode_spans"]

_logger = logging.getLogger(__name__)

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_ONE_BYTE = tuple(bytes((n,)) for n in range(0x80))
_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack


def _varint(n: int) -> bytes:
    """An unsigned varint (callers turn negative int64s into their two's complement first)."""
    if n < 0x80:
        return _ONE_BYTE[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: a string, bytes or an embedded message."""
    n = len(payload)
    return tag + (_ONE_BYTE[n] if n < 0x80 else _varint(n)) + payload


# Field numbers from opentelemetry/proto/**/*.proto, one constant per field written.
_REQUEST_RESOURCE_SPANS = _tag(1, _LEN)
_RESOURCE_SPANS_RESOURCE, _RESOURCE_SPANS_SCOPE_SPANS = _tag(1, _LEN), _tag(2, _LEN)
_RESOURCE_SPANS_SCHEMA_URL = _tag(3, _LEN)
_RESOURCE_ATTRIBUTES = _tag(1, _LEN)
_SCOPE_SPANS_SCOPE, _SCOPE_SPANS_SPANS, _SCOPE_SPANS_SCHEMA_URL = (
    _tag(1, _LEN),
    _tag(2, _LEN),
    _tag(3, _LEN),
)
_SCOPE_NAME, _SCOPE_VERSION, _SCOPE_ATTRIBUTES = _tag(1, _LEN), _tag(2, _LEN), _tag(3, _LEN)
_SPAN_TRACE_ID, _SPAN_SPAN_ID = _tag(1, _LEN) + b"\x10", _tag(2, _LEN) + b"\x08"
_SPAN_TRACE_STATE, _SPAN_PARENT_SPAN_ID = _tag(3, _LEN), _tag(4, _LEN) + b"\x08"
_SPAN_NAME, _SPAN_KIND = _tag(5, _LEN), _tag(6, _VARINT)
_SPAN_START, _SPAN_END = _tag(7, _FIXED64), _tag(8, _FIXED64)
_SPAN_ATTRIBUTES, _SPAN_DROPPED_ATTRIBUTES = _tag(9, _LEN), _tag(10, _VARINT)
_SPAN_EVENTS, _SPAN_DROPPED_EVENTS = _tag(11, _LEN), _tag(12, _VARINT)
_SPAN_LINKS, _SPAN_DROPPED_LINKS = _tag(13, _LEN), _tag(14, _VARINT)
_SPAN_STATUS, _SPAN_FLAGS = _tag(15, _LEN), _tag(16, _FIXED32)
_EVENT_TIME, _EVENT_NAME = _tag(1, _FIXED64), _tag(2, _LEN)
_EVENT_ATTRIBUTES, _EVENT_DROPPED_ATTRIBUTES = _tag(3, _LEN), _tag(4, _VARINT)
_LINK_TRACE_ID, _LINK_SPAN_ID = _tag(1, _LEN) + b"\x10", _tag(2, _LEN) + b"\x08"
_LINK_ATTRIBUTES, _LINK_DROPPED_ATTRIBUTES = _tag(4, _LEN), _tag(5, _VARINT)
_LINK_FLAGS = _tag(6, _FIXED32)
_STATUS_MESSAGE, _STATUS_CODE = _tag(2, _LEN), _tag(3, _VARINT)
_KEY_VALUE_KEY, _KEY_VALUE_VALUE = _tag(1, _LEN), _tag(2, _LEN)
_ANY_STRING, _ANY_BOOL, _ANY_INT = _tag(1, _LEN), _tag(2, _VARINT), _tag(3, _VARINT)
_ANY_DOUBLE, _ANY_ARRAY, _ANY_KVLIST = _tag(4, _FIXED64), _tag(5, _LEN), _tag(6, _LEN)
_ANY_BYTES = _tag(7, _LEN)
_LIST_VALUES = _tag(1, _LEN)  # ArrayValue.values and KeyValueList.values

_ANY_TRUE, _ANY_FALSE = _ANY_BOOL + b"\x01", _ANY_BOOL + b"\x00"
_HAS_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = _HAS_IS_REMOTE | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_SPAN_FLAGS_LOCAL, _SPAN_FLAGS_REMOTE = (
    _SPAN_FLAGS + _fixed32(_HAS_IS_REMOTE),
    _SPAN_FLAGS + _fixed32(_IS_REMOTE),
)
_LINK_FLAGS_LOCAL, _LINK_FLAGS_REMOTE = (
    _LINK_FLAGS + _fixed32(_HAS_IS_REMOTE),
    _LINK_FLAGS + _fixed32(_IS_REMOTE),
)
_SPAN_KINDS = {
    SpanKind.INTERNAL: _SPAN_KIND + _varint(PB2Span.SPAN_KIND_INTERNAL),
    SpanKind.SERVER: _SPAN_KIND + _varint(PB2Span.SPAN_KIND_SERVER),
    SpanKind.CLIENT: _SPAN_KIND + _varint(PB2Span.SPAN_KIND_CLIENT),
    SpanKind.PRODUCER: _SPAN_KIND + _varint(PB2Span.SPAN_KIND_PRODUCER),
    SpanKind.CONSUMER: _SPAN_KIND + _varint(PB2Span.SPAN_KIND_CONSUMER),
}


def _any_value(value: Any) -> bytes:
    """The body of an `AnyValue`; the common exact types first, then `_encode_value`'s order."""
    kind = type(value)
    if kind is str:
        return _field(_ANY_STRING, value.encode())
    if kind is bool:
        return _ANY_TRUE if value else _ANY_FALSE
    if kind is int:
        return _ANY_INT + _varint(_int64(value))
    if kind is float:
        return _ANY_DOUBLE + _double(value)
    if value is None:
        return b""
    if isinstance(value, bool):
        return _ANY_TRUE if value else _ANY_FALSE
    if isinstance(value, str):
        return _field(_ANY_STRING, str.encode(value))
    if isinstance(value, int):
        return _ANY_INT + _varint(_int64(int(value)))
    if isinstance(value, float):
        return _ANY_DOUBLE + _double(value)
    if isinstance(value, bytes):
        return _field(_ANY_BYTES, value)
    if isinstance(value, Sequence):
        items = b"".join([_field(_LIST_VALUES, _any_value(v)) for v in value])
        return _field(_ANY_ARRAY, items)
    if isinstance(value, Mapping):
        pairs = b"".join([_field(_LIST_VALUES, _key_value(str(k), v)) for k, v in value.items()])
        return _field(_ANY_KVLIST, pairs)
    raise ValueError(f"attribute value of type {kind.__name__} has no OTLP encoding")


def _int64(value: int) -> int:
    """An int64 as the unsigned 64-bit number its varint encodes."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"attribute value {value} is outside int64")
    return value & 0xFFFF_FFFF_FFFF_FFFF


def _key_value(key: str, value: Any) -> bytes:
    return _key_field(key) + _field(_KEY_VALUE_VALUE, _any_value(value))


class _Memo(dict[tuple[Any, ...], bytes]):
    """Encodings made once and looked up after (a plain dict lookup on a hit, in C): attribute
    keys and most values repeat from span to span (RPC names, models, tiers, providers).
    Emptied when full, so values that never repeat (request ids) cannot grow it without bound.
    """

    def __init__(self, make: Callable[..., bytes], limit: int) -> None:
        super().__init__()
        self._make = make
        self._limit = limit

    def __missing__(self, key: tuple[Any, ...]) -> bytes:
        if len(self) >= self._limit:
            self.clear()
        encoded = self[key] = self._make(*key)
        return encoded


def _key_field(key: str) -> bytes:
    return _field(_KEY_VALUE_KEY, key.encode()) if key else b""


def _text_attribute(tag: bytes, key: str, value: str | bool) -> bytes:
    return _field(tag, _key_value(key, value))


def _number_prefix(tag: bytes, key: str, value_tag: bytes, number_size: int) -> bytes:
    """An int or float attribute's field up to the number's own bytes, which come last: what
    precedes them depends only on the key and how many bytes the number takes."""
    value_field = _KEY_VALUE_VALUE + _ONE_BYTE[len(value_tag) + number_size] + value_tag
    key_field = _key_field(key)
    return tag + _varint(len(key_field) + len(value_field) + number_size) + key_field + value_field


# Keyed by (tag, key, value) for exact `str` and `bool` values only: `True == 1` and
# `0.0 == -0.0`, so ints and floats, whose bytes would differ, never share these keys.
_TEXT_ATTRIBUTES = _Memo(_text_attribute, 4096)
_MEMO_TEXT_LENGTH = 256  # longer strings (messages, not names) are written each time
_NUMBER_PREFIXES = _Memo(_number_prefix, 1024)
_FLOAT_SIZE = 8


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    fields = []
    for key, value in attributes.items():
        kind = type(value)
        if kind is bool or (kind is str and len(value) <= _MEMO_TEXT_LENGTH):
            fields.append(_TEXT_ATTRIBUTES[tag, key, value])
        elif kind is float:
            fields.append(_NUMBER_PREFIXES[tag, key, _ANY_DOUBLE, _FLOAT_SIZE] + _double(value))
        elif kind is int:
            number = _ONE_BYTE[value] if 0 <= value < 0x80 else _varint(_int64(value))
            fields.append(_NUMBER_PREFIXES[tag, key, _ANY_INT, len(number)] + number)
        else:
            fields.append(_field(tag, _key_value(key, value)))
    return b"".join(fields)


def _unsigned(tag: bytes, value: int) -> bytes:
    return tag + _varint(value) if value else b""


def _string(tag: bytes, value: str | None) -> bytes:
    return _field(tag, value.encode()) if value else b""


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    if context is None:
        raise ValueError(f"span {span.name!r} has no span context")
    parent = span.parent
    start, end = span.start_time, span.end_time
    status = span.status
    return b"".join(
        [
            _SPAN_TRACE_ID,
            context.trace_id.to_bytes(16, "big"),
            _SPAN_SPAN_ID,
            context.span_id.to_bytes(8, "big"),
            _string(_SPAN_TRACE_STATE, _trace_state(context.trace_state)),
            _SPAN_PARENT_SPAN_ID + parent.span_id.to_bytes(8, "big") if parent else b"",
            _string(_SPAN_NAME, span.name),
            _SPAN_KINDS[span.kind],
            _SPAN_START + _fixed64(start) if start else b"",
            _SPAN_END + _fixed64(end) if end else b"",
            _attributes(_SPAN_ATTRIBUTES, span.attributes),
            _unsigned(_SPAN_DROPPED_ATTRIBUTES, span.dropped_attributes),
            *[_field(_SPAN_EVENTS, _event(event)) for event in span.events],
            _unsigned(_SPAN_DROPPED_EVENTS, span.dropped_events),
            *[_field(_SPAN_LINKS, _link(link)) for link in span.links],
            _unsigned(_SPAN_DROPPED_LINKS, span.dropped_links),
            b"" if status is None else _status(status.status_code, status.description),
            _SPAN_FLAGS_REMOTE if parent and parent.is_remote else _SPAN_FLAGS_LOCAL,
        ]
    )


def _event(event: Event) -> bytes:
    return (
        (_EVENT_TIME + _fixed64(event.timestamp) if event.timestamp else b"")
        + _string(_EVENT_NAME, event.name)
        + _attributes(_EVENT_ATTRIBUTES, event.attributes)
        + _unsigned(_EVENT_DROPPED_ATTRIBUTES, event.dropped_attributes)
    )


def _link(link: Link) -> bytes:
    context = link.context
    return (
        _LINK_TRACE_ID
        + context.trace_id.to_bytes(16, "big")
        + _LINK_SPAN_ID
        + context.span_id.to_bytes(8, "big")
        + _attributes(_LINK_ATTRIBUTES, link.attributes)
        + _unsigned(_LINK_DROPPED_ATTRIBUTES, link.dropped_attributes)
        + (_LINK_FLAGS_REMOTE if context.is_remote else _LINK_FLAGS_LOCAL)
    )


def _status(code: StatusCode, description: str | None) -> bytes:
    if description is None:
        return _STATUSES[code]
    return _field(
        _SPAN_STATUS, _string(_STATUS_MESSAGE, description) + _unsigned(_STATUS_CODE, code.value)
    )


_STATUSES = {code: _field(_SPAN_STATUS, _unsigned(_STATUS_CODE, code.value)) for code in StatusCode}


def _trace_state(trace_state: TraceState | None) -> str:
    if not trace_state:
        return ""
    return ",".join([f"{key}={value}" for key, value in trace_state.items()])


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    return (
        _string(_SCOPE_NAME, scope.name)
        + _string(_SCOPE_VERSION, scope.version)
        + _attributes(_SCOPE_ATTRIBUTES, scope.attributes)
    )


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized `ExportTraceServiceRequest` that the SDK's `encode_spans` builds."""
    # Resource equality hashes a JSON dump of its attributes, so each (resource, scope) pair of
    # objects is looked up once, by identity; the dicts keyed by the objects themselves then
    # merge equal ones, in order of first appearance.
    groups: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    by_identity: dict[tuple[int, int], list[bytes]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        group = by_identity.get((id(resource), id(scope)))
        if group is None:
            scopes = groups.setdefault(resource, {})
            group = by_identity[id(resource), id(scope)] = scopes.setdefault(scope or None, [])
        group.append(_field(_SCOPE_SPANS_SPANS, _span(span)))
    request = []
    for resource, scopes in groups.items():
        parts = [
            _field(_RESOURCE_SPANS_RESOURCE, _attributes(_RESOURCE_ATTRIBUTES, resource.attributes))
        ]
        for scope, encoded_spans in scopes.items():
            body = (
                _field(_SCOPE_SPANS_SCOPE, _scope(scope))
                + b"".join(encoded_spans)
                + _string(_SCOPE_SPANS_SCHEMA_URL, scope.schema_url if scope else None)
            )
            parts.append(_field(_RESOURCE_SPANS_SCOPE_SPANS, body))
        parts.append(_string(_RESOURCE_SPANS_SCHEMA_URL, resource.schema_url))
        request.append(_field(_REQUEST_RESOURCE_SPANS, b"".join(parts)))
    return b"".join(request)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter with the batch encoded by `encode_spans` above.

    The SDK's exporter calls `_translate_data` for the message to send (on every attempt); this
    returns the same message, parsed from the fast bytes. Should the fast encoder fail, the
    batch is encoded by the SDK's encoder instead, and the first failure is logged.
    """

    _warned = False

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        try:
            return ExportTraceServiceRequest.FromString(encode_spans(data))
        except Exception as error:
            if not self._warned:
                self._warned = True
                _logger.warning(
                    "fast OTLP span encoding failed (%s: %s); this batch and any other that "
                    "fails is encoded by the SDK's encoder",
                    type(error).__name__,
                    error,
                )
            return super()._translate_data(data)
