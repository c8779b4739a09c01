"""A fake LLM provider: real HTTP on loopback, speaking both wire formats as the real APIs do.

`POST /v1/chat/completions` answers like OpenAI (SSE chunks, `data: [DONE]`, usage in a last
chunk with empty `choices` when `stream_options.include_usage` is set, `prompt_tokens_details.
cached_tokens`, tool-call deltas; or one JSON completion). `POST /v1/messages` answers like
Anthropic (`message_start`, `content_block_*`, `ping`, `message_delta`, `message_stop`, `error`
events; or one JSON message; cache read and creation tokens). So the OpenAI-style base URL is
`{url}/v1` and the Anthropic one `{url}`.

Tests script it per upstream model with `Reply`s: status codes and error bodies, 429 with
Retry-After, a slow first token, stalls, cuts mid-stream, error events, exact usage. Every
request is recorded (`received`), with when its client went away.

It also runs alone, as a fast mock upstream for measuring the gateway's overhead:

    python -m tests.support.fake_provider --port 8090 --tokens 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeProvider", "FakeToolCall", "Received", "Reply"]

_WORDS = [
    "The",
    "quarterly",
    "report",
    "shows",
    "steady",
    "growth",
    "in",
    "new",
    "accounts",
    "while",
    "churn",
    "stayed",
    "flat",
    "and",
    "support",
    "volume",
    "fell",
    "after",
    "the",
    "billing",
    "fixes",
    "shipped",
    "in",
    "the",
    "second",
    "month",
]


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

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))


@dataclass
class _Plan:
    """A reply made concrete for one request."""

    reply: Reply
    pieces: list[str]
    usage_in: int
    output_tokens: int
    message_id: str = field(default="")


class FakeProvider:
    """Start with `async with FakeProvider() as fake:`; `fake.url` is its root URL."""

    def __init__(self, default: Reply | None = None, *, api_key: str | None = None) -> None:
        self.default = default or Reply()
        # When set, requests must carry this key (Bearer or x-api-key), or get a 401.
        self.api_key = api_key
        self.received: list[Received] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, model: str, *replies: Reply) -> None:
        """The next requests for `model` get these replies, in order; then the default."""
        self._scripts.setdefault(model, deque()).extend(replies)

    def requests_for(self, model: str) -> list[Received]:
        return [r for r in self.received if r.model == model]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeProvider:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # --- shared -------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> tuple[Received, Reply]:
        body = await request.json()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        received = Received(
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            started_at=time.perf_counter(),
            client_port=peer[1] if peer else 0,
        )
        self.received.append(received)
        queue = self._scripts.get(received.model)
        reply = queue.popleft() if queue else self.default
        return received, reply

    def _presented_key(self, received: Received) -> str:
        auth = received.headers.get("authorization", "")
        return auth.removeprefix("Bearer ").strip() or received.headers.get("x-api-key", "")

    def _plan(self, received: Received, reply: Reply) -> _Plan:
        text = reply.text if reply.text is not None else " ".join(_words(reply.tokens))
        words = text.split(" ") if text else []
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        if reply.input_tokens is not None:
            usage_in = reply.input_tokens
        else:
            size = len(json.dumps(received.body.get("messages", [])))
            size += len(json.dumps(received.body.get("tools", [])))
            size += len(json.dumps(received.body.get("system", [])))
            usage_in = max(1, size // 4)
        output = reply.output_tokens
        if output is None:
            output = len(pieces) + sum(1 + call.fragments for call in reply.tool_calls)
        return _Plan(reply, pieces, usage_in, output, message_id=f"{next(self._ids):08d}")

    async def _refusal(self, received: Received, reply: Reply, anthropic: bool) -> web.Response:
        """An error response in the API's format."""
        message = reply.error_message.replace("{key}", self._presented_key(received))
        headers = {"retry-after": reply.retry_after} if reply.retry_after is not None else {}
        if anthropic:
            kind = reply.error_type or _anthropic_error_type(reply.status)
            body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            kind = reply.error_type or ("rate_limit_exceeded" if reply.status == 429 else "error")
            body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        return web.json_response(body, status=reply.status, headers=headers)

    def _unauthorized(self, received: Received) -> Reply | None:
        if self.api_key is None or self._presented_key(received) == self.api_key:
            return None
        return Reply(
            status=401,
            error_type="authentication_error",
            error_message="Incorrect API key provided: {key}",
        )

    async def _open_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        return response

    async def _tokens(
        self,
        request: web.Request,
        response: web.StreamResponse,
        received: Received,
        plan: _Plan,
        frames: list[bytes],
        error_frame: bytes,
    ) -> bool:
        """Send one frame per token with the reply's pacing and faults; False: stop here."""
        reply = plan.reply
        for i, frame in enumerate(frames):
            if i == reply.stall_after_tokens:
                await _until_disconnected(request)
                received.disconnected_at = time.perf_counter()
                return False
            if i == reply.cut_after_tokens:
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return False
            if i == reply.error_event_after_tokens:
                await response.write(error_frame)
                await response.write_eof()
                return False
            if i and reply.token_interval_s:
                await asyncio.sleep(reply.token_interval_s)
            try:
                await response.write(frame)
            except ConnectionError:
                received.disconnected_at = time.perf_counter()
                return False
        return True

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, anthropic=False)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, anthropic=True)

    async def _answer(self, request: web.Request, *, anthropic: bool) -> web.StreamResponse:
        received, reply = await self._receive(request)
        reply = self._unauthorized(received) or reply
        if reply.status != 200:
            return await self._refusal(received, reply, anthropic=anthropic)
        plan = self._plan(received, reply)
        if reply.first_token_delay_s:
            await asyncio.sleep(reply.first_token_delay_s)
        if not received.body.get("stream"):
            whole = _anthropic_message if anthropic else _openai_completion
            return web.json_response(whole(received, plan))
        response = await self._open_stream(request)
        stream = self._anthropic_stream if anthropic else self._openai_stream
        with contextlib.suppress(ConnectionError):
            await stream(request, response, received, plan)
        return response

    # --- OpenAI chat completions ----------------------------------------------------------

    async def _openai_stream(
        self, request: web.Request, response: web.StreamResponse, received: Received, plan: _Plan
    ) -> None:
        reply = plan.reply
        base = {
            "id": f"chatcmpl-{plan.message_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": received.model,
            "system_fingerprint": "fp_fake",
        }
        wants_usage = bool((received.body.get("stream_options") or {}).get("include_usage"))
        send_usage = wants_usage or not reply.honour_include_usage

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if send_usage:
                data["usage"] = None
            return _sse(data)

        await response.write(chunk({"role": "assistant", "content": "", "refusal": None}))
        frames = [chunk({"content": piece}) for piece in plan.pieces]
        for index, call in enumerate(reply.tool_calls):
            frames.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            frames += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _split(call.arguments, call.fragments)
            ]
        error = {"error": {"message": reply.error_message, "type": "server_error", "code": None}}
        if not await self._tokens(request, response, received, plan, frames, _sse(error)):
            return
        finish = "tool_calls" if reply.tool_calls else "stop"
        await response.write(chunk({}, finish))
        if send_usage:
            await response.write(
                _sse({**base, "choices": [], "usage": _openai_usage(plan)}),
            )
        if reply.send_done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()

    # --- Anthropic Messages ---------------------------------------------------------------

    async def _anthropic_stream(
        self, request: web.Request, response: web.StreamResponse, received: Received, plan: _Plan
    ) -> None:
        reply = plan.reply
        start = _anthropic_message(received, plan, streaming=True)
        await response.write(_sse({"type": "message_start", "message": start}, "message_start"))
        frames: list[bytes] = []
        block = 0
        if plan.pieces:
            frames.append(
                _sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
                + _sse({"type": "ping"}, "ping")
                + _text_delta(0, plan.pieces[0])
            )
            frames += [_text_delta(0, piece) for piece in plan.pieces[1:]]
            frames[-1] += _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            block = 1
        for call in reply.tool_calls:
            tool_block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            frames.append(
                _sse(
                    {"type": "content_block_start", "index": block, "content_block": tool_block},
                    "content_block_start",
                )
            )
            frames += [
                _sse(
                    {
                        "type": "content_block_delta",
                        "index": block,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                    "content_block_delta",
                )
                for piece in _split(call.arguments, call.fragments)
            ]
            frames[-1] += _sse({"type": "content_block_stop", "index": block}, "content_block_stop")
            block += 1
        error = {
            "type": "error",
            "error": {"type": reply.error_type or "overloaded_error", "message": "Overloaded"},
        }
        if not await self._tokens(request, response, received, plan, frames, _sse(error, "error")):
            return
        usage: dict[str, Any] = {"output_tokens": plan.output_tokens}
        if reply.repeat_usage_in_delta:
            usage = {**_anthropic_usage(plan), **usage}
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use" if reply.tool_calls else "end_turn"},
            "usage": usage,
        }
        await response.write(_sse(delta, "message_delta"))
        await response.write(_sse({"type": "message_stop"}, "message_stop"))
        await response.write_eof()


def _words(count: int) -> Iterator[str]:
    return itertools.islice(itertools.cycle(_WORDS), count)


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, parts)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    payload = json.dumps(data, separators=(",", ":")).encode()
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


def _text_delta(index: int, text: str) -> bytes:
    return _sse(
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        },
        "content_block_delta",
    )


async def _until_disconnected(request: web.Request) -> None:
    # aiohttp tells a handler nothing when its client goes away (unless it is cancelled, which
    # would lose the moment), so a stall watches the transport.
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(0.005)


def _anthropic_error_type(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")


def _openai_usage(plan: _Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.usage_in,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.usage_in + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _openai_completion(received: Received, plan: _Plan) -> dict[str, Any]:
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
        "usage": _openai_usage(plan),
        "system_fingerprint": "fp_fake",
    }


def _anthropic_usage(plan: _Plan) -> dict[str, Any]:
    reply = plan.reply
    return {
        "input_tokens": plan.usage_in - reply.cached_tokens - reply.cache_write_tokens,
        "cache_creation_input_tokens": reply.cache_write_tokens,
        "cache_read_input_tokens": reply.cached_tokens,
    }


def _anthropic_message(
    received: Received, plan: _Plan, *, streaming: bool = False
) -> dict[str, Any]:
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
            **_anthropic_usage(plan),
            # message_start reports a placeholder output count; the real one comes at the end.
            "output_tokens": 1 if streaming else plan.output_tokens,
        },
    }


async def _serve(args: argparse.Namespace) -> None:
    default = Reply(
        tokens=args.tokens,
        first_token_delay_s=args.ttft_ms / 1000,
        token_interval_s=args.token_interval_ms / 1000,
        input_tokens=args.input_tokens,
        cached_tokens=args.cached_tokens,
    )
    fake = FakeProvider(default)
    url = await fake.start(args.host, args.port)
    print(f"fake provider on {url}: OpenAI base {url}/v1, Anthropic base {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--tokens", type=int, default=50, help="tokens per answer")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token")
    parser.add_argument("--token-interval-ms", type=float, default=0.0)
    parser.add_argument("--input-tokens", type=int, default=None)
    parser.add_argument("--cached-tokens", type=int, default=0)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
