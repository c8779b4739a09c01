"""What the fake provider says: the replies tests script, and the payloads of both wire
formats (OpenAI chat completions, Anthropic Messages) built the way the real APIs build them.

`tests.support.fake_provider` serves these over real HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FakeToolCall",
    "Plan",
    "Received",
    "Reply",
    "anthropic_error_type",
    "anthropic_message",
    "anthropic_usage",
    "openai_completion",
    "openai_usage",
    "split",
    "sse",
    "text_delta",
    "words",
]

_TEXT = (
    "The quarterly report shows steady growth in new accounts while churn stayed flat and "
    "support volume fell after the billing fixes shipped in the second month"
)


@dataclass(frozen=True)
class FakeToolCall:
    id: str
    name: str
    arguments: str
    # How many pieces the arguments are streamed in.
    fragments: int = 3


@dataclass(frozen=True)
class Reply:
    """What the fake answers to one request."""

    # The answer is this text, split at spaces into tokens; None: `tokens` words.
    text: str | None = None
    tokens: int = 12
    tool_calls: tuple[FakeToolCall, ...] = ()
    # A status other than 200 answers with the API's error body; "{key}" in the message
    # becomes the key the client presented (providers do echo keys back).
    status: int = 200
    error_type: str = ""
    error_message: str = "simulated upstream error"
    retry_after: str | None = None
    first_token_delay_s: float = 0.0
    token_interval_s: float = 0.0
    # After this many tokens: hang until the client goes away.
    stall_after_tokens: int | None = None
    # After this many tokens: drop the connection without finishing the body.
    cut_after_tokens: int | None = None
    # After this many tokens: an error event in the stream (Anthropic `error`, OpenAI-style
    # `{"error": ...}` chunk), then the end of the body.
    error_event_after_tokens: int | None = None
    # Normalized input tokens (including cached and cache-write); None: from the body size.
    input_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    # Report output tokens as this instead of the number of tokens sent.
    output_tokens: int | None = None
    # Anthropic: repeat the input and cache fields in message_delta (newer API versions do).
    repeat_usage_in_delta: bool = True
    # OpenAI: send usage only when asked with stream_options.include_usage (as OpenAI does).
    honour_include_usage: bool = True
    # OpenAI-style servers that never send `data: [DONE]`.
    send_done: bool = True


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    started_at: float
    # The client's port: the same one on two requests means the connection was reused.
    client_port: int
    # When the client went away mid-answer (perf_counter), if it did.
    disconnected_at: float | None = None
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    def client_went_away(self) -> None:
        self.disconnected_at = time.perf_counter()
        self.gone.set()


@dataclass
class Plan:
    """A reply made concrete for one request."""

    reply: Reply
    pieces: list[str]
    usage_in: int
    output_tokens: int
    message_id: str = field(default="")


def words(count: int) -> Iterator[str]:
    return itertools.islice(itertools.cycle(_TEXT.split()), count)


def split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, parts)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    payload = json.dumps(data, separators=(",", ":")).encode()
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


def text_delta(index: int, text: str) -> bytes:
    return sse(
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        },
        "content_block_delta",
    )


def anthropic_error_type(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")


def openai_usage(plan: Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.usage_in,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.usage_in + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def openai_completion(received: Received, plan: Plan) -> dict[str, Any]:
    calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in plan.reply.tool_calls
    ]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.pieces) or None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{plan.message_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": received.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": openai_usage(plan),
        "system_fingerprint": "fp_fake",
    }


def anthropic_usage(plan: Plan) -> dict[str, Any]:
    reply = plan.reply
    return {
        "input_tokens": plan.usage_in - reply.cached_tokens - reply.cache_write_tokens,
        "cache_creation_input_tokens": reply.cache_write_tokens,
        "cache_read_input_tokens": reply.cached_tokens,
    }


def anthropic_message(received: Received, plan: Plan, *, streaming: bool = False) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if not streaming:
        if plan.pieces:
            content.append({"type": "text", "text": "".join(plan.pieces)})
        content += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": json.loads(c.arguments)}
            for c in plan.reply.tool_calls
        ]
    stop = None if streaming else ("tool_use" if plan.reply.tool_calls else "end_turn")
    return {
        "id": f"msg_{plan.message_id}",
        "type": "message",
        "role": "assistant",
        "model": received.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            **anthropic_usage(plan),
            # message_start reports a placeholder output count; the real one comes at the end.
            "output_tokens": 1 if streaming else plan.output_tokens,
        },
    }


# OpenAI's 400s refusing a parameter or value the model does not take (its words, by code).
REFUSED_PARAMETERS = [
    (
        "unsupported_parameter",
        "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
    ),
    (
        "unsupported_value",
        "Unsupported value: 'temperature' does not support 0 with this model. "
        "Only the default (1) value is supported.",
    ),
]
