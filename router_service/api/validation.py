"""Turns a `RouteRequest` message into a `ChatRequest`, or says exactly what is wrong with it.

Every check runs before any work is done, so a bad request costs nothing and charges nothing.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from google.protobuf import json_format

from router_service._proto import router_pb2 as pb
from router_service.chat import (
    ROLES,
    ChatMessage,
    ChatRequest,
    Hints,
    TierPreference,
    ToolCall,
    ToolSpec,
)
from router_service.config import LimitsConfig
from router_service.errors import InvalidRequest

__all__ = ["valid_request_id", "validate_feedback_request", "validate_route_request"]

_TASK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_.:/@-]{1,128}")
_MAX_METADATA_KEY = 128
_MAX_ID = 128
_MAX_METADATA_VALUE = 1024
# JSON in a request (tool schemas, tool-call arguments) nests at most this deep: real schemas
# use a dozen levels, and deeper input would only exhaust the recursion of whatever walks it.
MAX_JSON_DEPTH = 64
_TIERS = {
    pb.TIER_PREFERENCE_UNSPECIFIED: TierPreference.AUTO,
    pb.TIER_PREFERENCE_AUTO: TierPreference.AUTO,
    pb.TIER_PREFERENCE_CHEAP: TierPreference.CHEAP,
    pb.TIER_PREFERENCE_FRONTIER: TierPreference.FRONTIER,
}


def validate_route_request(message: pb.RouteRequest, limits: LimitsConfig) -> ChatRequest:
    size = message.ByteSize()
    if size > limits.max_request_bytes:
        raise InvalidRequest(
            f"request is {size} bytes; the limit is {limits.max_request_bytes} bytes"
        )
    if not message.task:
        raise InvalidRequest("task is empty: name the task class, e.g. 'summarization'")
    if not _TASK.fullmatch(message.task):
        raise InvalidRequest(
            "task must be 1-128 characters of letters, digits and _ . : / - "
            "starting with a letter or digit"
        )
    if message.max_output_tokens < 0:
        raise InvalidRequest(f"max_output_tokens is {message.max_output_tokens}; it must be >= 0")
    if message.max_output_tokens > limits.max_output_tokens:
        raise InvalidRequest(
            f"max_output_tokens is {message.max_output_tokens}; "
            f"the limit is {limits.max_output_tokens}"
        )
    temperature = message.temperature if message.HasField("temperature") else None
    if temperature is not None and not (math.isfinite(temperature) and 0 <= temperature <= 2):
        raise InvalidRequest(f"temperature is {temperature}; it must be between 0 and 2")
    if message.request_id and not _REQUEST_ID.fullmatch(message.request_id):
        raise InvalidRequest("request_id must be 1-128 characters of letters, digits and _ . : -")
    return ChatRequest(
        request_id=message.request_id or uuid.uuid4().hex,
        task=message.task,
        messages=_messages(message, limits),
        tools=_tools(message, limits),
        max_output_tokens=message.max_output_tokens,
        temperature=temperature,
        hints=_hints(message.hints),
        metadata=_metadata(message, limits),
    )


def valid_request_id(message: pb.RouteRequest | None) -> str:
    """The request's own `request_id` when it is a valid one, else empty (for the record of a
    request refused as invalid: the id, never anything else the caller sent)."""
    if message is None or not _REQUEST_ID.fullmatch(message.request_id):
        return ""
    return message.request_id


def _messages(message: pb.RouteRequest, limits: LimitsConfig) -> tuple[ChatMessage, ...]:
    count = len(message.messages)
    if count == 0:
        raise InvalidRequest("messages is empty: send at least one user message")
    if count > limits.max_messages:
        raise InvalidRequest(f"{count} messages; the limit is {limits.max_messages}")
    out = []
    for i, m in enumerate(message.messages):
        if m.role not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role is {shown(m.role)}; expected one of "
                + ", ".join(sorted(ROLES))
            )
        if not m.content and not m.tool_calls:
            raise InvalidRequest(f"messages[{i}] has no content")
        if m.tool_calls and m.role != "assistant":
            raise InvalidRequest(f"messages[{i}]: only assistant messages carry tool_calls")
        if m.role == "tool" and not m.tool_call_id:
            raise InvalidRequest(f"messages[{i}]: a tool message needs tool_call_id")
        if len(m.tool_call_id) > _MAX_ID or any(
            len(c.id) > _MAX_ID or (c.name and not _TOOL_NAME.fullmatch(c.name))
            for c in m.tool_calls
        ):
            raise InvalidRequest(
                f"messages[{i}]: tool call ids are at most {_MAX_ID} characters and tool names "
                "1-64 letters, digits, _ or -"
            )
        for c in m.tool_calls:
            if c.arguments_json:
                arguments = _json(c.arguments_json, f"messages[{i}].tool_calls arguments_json")
                if not isinstance(arguments, dict):
                    raise InvalidRequest(
                        f"messages[{i}].tool_calls: arguments_json of {c.name!r} must be a JSON "
                        "object"
                    )
        calls = tuple(
            ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json) for c in m.tool_calls
        )
        out.append(ChatMessage(m.role, m.content, m.tool_call_id, calls))
    if not any(m.role == "user" for m in out):
        raise InvalidRequest("messages has no user message")
    return tuple(out)


def _tools(message: pb.RouteRequest, limits: LimitsConfig) -> tuple[ToolSpec, ...]:
    if len(message.tools) > limits.max_tools:
        raise InvalidRequest(f"{len(message.tools)} tools; the limit is {limits.max_tools}")
    tools = []
    seen: set[str] = set()
    for i, tool in enumerate(message.tools):
        if not _TOOL_NAME.fullmatch(tool.name):
            raise InvalidRequest(
                f"tools[{i}].name must be 1-64 letters, digits, _ or -; got {shown(tool.name)}"
            )
        if tool.name in seen:
            raise InvalidRequest(f"tools[{i}]: duplicate tool name {tool.name!r}")
        seen.add(tool.name)
        tools.append(ToolSpec(tool.name, tool.description, _tool_parameters(tool, i)))
    return tuple(tools)


def _tool_parameters(tool: pb.Tool, index: int) -> dict[str, Any]:
    which = tool.WhichOneof("parameters")
    if which is None:
        return {"type": "object", "properties": {}}
    if which == "parameters_struct":
        try:
            schema: Any = json_format.MessageToDict(tool.parameters_struct)
        except ValueError as exc:  # NaN or Infinity as a number value
            raise InvalidRequest(f"tools[{index}].parameters_struct is not JSON: {exc}") from None
        _check_depth(schema, f"tools[{index}].parameters_struct")
        return dict(schema)
    schema = _json(tool.parameters_json, f"tools[{index}].parameters_json")
    if not isinstance(schema, dict):
        raise InvalidRequest(f"tools[{index}].parameters_json must be a JSON object")
    return schema


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):
        raise ValueError(f"the number {shown(number, 20)} is out of range")
    return value


def _json(text: str, where: str) -> Any:
    """`text` parsed as strict JSON (no NaN or Infinity, which providers refuse, spelt out or
    as a number too large for a double), nested at most `MAX_JSON_DEPTH` deep."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except ValueError as exc:
        raise InvalidRequest(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"{where} nests deeper than {MAX_JSON_DEPTH} levels") from None
    _check_depth(value, where)
    return value


def _check_depth(value: Any, where: str) -> None:
    """Without recursion: the point is to refuse what recursion would choke on."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(f"{where} nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def shown(value: str, limit: int = 40) -> str:
    """A caller's value quoted in an error message, cut short: a message must stay small (gRPC
    sends it as metadata) and must not carry a prompt back."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} chars)"


def _hints(hints: pb.RouteHints) -> Hints:
    tier = _TIERS.get(hints.tier)
    if tier is None:
        raise InvalidRequest(f"hints.tier has unknown value {hints.tier}")
    if hints.force_model and not _MODEL_NAME.fullmatch(hints.force_model):
        raise InvalidRequest(
            f"hints.force_model is {shown(hints.force_model)}: not a model name from the catalog"
        )
    return Hints(
        tier=tier,
        force_model=hints.force_model,
        money_movement=hints.money_movement,
        customer_escalation=hints.customer_escalation,
        response_cache=hints.response_cache,
    )


def _metadata(message: pb.RouteRequest, limits: LimitsConfig) -> dict[str, str]:
    if len(message.metadata) > limits.max_metadata_entries:
        raise InvalidRequest(
            f"{len(message.metadata)} metadata entries; the limit is {limits.max_metadata_entries}"
        )
    for key, value in message.metadata.items():
        if not key or len(key) > _MAX_METADATA_KEY or len(value) > _MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"metadata keys must be 1-{_MAX_METADATA_KEY} characters and values at most "
                f"{_MAX_METADATA_VALUE}"
            )
    return dict(message.metadata)


_MAX_FEEDBACK_LABEL = 128
_MAX_FEEDBACK_COMMENT = 4096


def validate_feedback_request(message: pb.FeedbackRequest) -> None:
    if not message.request_id:
        raise InvalidRequest("request_id is empty: name the request the feedback is about")
    if not _REQUEST_ID.fullmatch(message.request_id):
        raise InvalidRequest("request_id must be 1-128 characters of letters, digits and _ . : -")
    if not (math.isfinite(message.score) and 0 <= message.score <= 1):
        raise InvalidRequest(f"score is {message.score}; it must be between 0 and 1")
    if len(message.label) > _MAX_FEEDBACK_LABEL:
        raise InvalidRequest(f"label is longer than {_MAX_FEEDBACK_LABEL} characters")
    if len(message.comment) > _MAX_FEEDBACK_COMMENT:
        raise InvalidRequest(f"comment is longer than {_MAX_FEEDBACK_COMMENT} characters")
