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
from typing import Any

from aiohttp import web

from tests.support.fake_wire import (
    FakeToolCall,
    Plan,
    Received,
    Reply,
    anthropic_error_type,
    anthropic_message,
    anthropic_usage,
    openai_completion,
    openai_usage,
    split,
    sse,
    text_delta,
    words,
)

__all__ = ["FakeProvider", "FakeToolCall", "Received", "Reply"]


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

    async def disconnected(self, received: Received, within: float = 3.0) -> float | None:
        """When `received`'s client went away mid-answer (perf_counter), waiting up to
        `within` seconds for it to happen; None if it did not."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(received.gone.wait(), within)
        return received.disconnected_at

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

    def _plan(self, received: Received, reply: Reply) -> Plan:
        text = reply.text if reply.text is not None else " ".join(words(reply.tokens))
        parts = text.split(" ") if text else []
        pieces = [w if i == 0 else " " + w for i, w in enumerate(parts)]
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
        return Plan(reply, pieces, usage_in, output, message_id=f"{next(self._ids):08d}")

    async def _refusal(self, received: Received, reply: Reply, anthropic: bool) -> web.Response:
        """An error response in the API's format."""
        message = reply.error_message.replace("{key}", self._presented_key(received))
        headers = {"retry-after": reply.retry_after} if reply.retry_after is not None else {}
        if anthropic:
            kind = reply.error_type or anthropic_error_type(reply.status)
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
        plan: Plan,
        frames: list[bytes],
        error_frame: bytes,
    ) -> bool:
        """Send one frame per token with the reply's pacing and faults; False: stop here."""
        reply = plan.reply
        for i, frame in enumerate(frames):
            if i == reply.stall_after_tokens:
                await _until_disconnected(request)
                received.client_went_away()
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
                received.client_went_away()
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
            whole = anthropic_message if anthropic else openai_completion
            return web.json_response(whole(received, plan))
        response = await self._open_stream(request)
        stream = self._anthropic_stream if anthropic else self._openai_stream
        with contextlib.suppress(ConnectionError):
            await stream(request, response, received, plan)
        return response

    # --- OpenAI chat completions ----------------------------------------------------------

    async def _openai_stream(
        self, request: web.Request, response: web.StreamResponse, received: Received, plan: Plan
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
            return sse(data)

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
                for piece in split(call.arguments, call.fragments)
            ]
        error = {"error": {"message": reply.error_message, "type": "server_error", "code": None}}
        if not await self._tokens(request, response, received, plan, frames, sse(error)):
            return
        finish = "tool_calls" if reply.tool_calls else "stop"
        await response.write(chunk({}, finish))
        if send_usage:
            await response.write(
                sse({**base, "choices": [], "usage": openai_usage(plan)}),
            )
        if reply.send_done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()

    # --- Anthropic Messages ---------------------------------------------------------------

    async def _anthropic_stream(
        self, request: web.Request, response: web.StreamResponse, received: Received, plan: Plan
    ) -> None:
        reply = plan.reply
        start = anthropic_message(received, plan, streaming=True)
        await response.write(sse({"type": "message_start", "message": start}, "message_start"))
        frames: list[bytes] = []
        block = 0
        if plan.pieces:
            frames.append(
                sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
                + sse({"type": "ping"}, "ping")
                + text_delta(0, plan.pieces[0])
            )
            frames += [text_delta(0, piece) for piece in plan.pieces[1:]]
            frames[-1] += sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            block = 1
        for call in reply.tool_calls:
            tool_block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            frames.append(
                sse(
                    {"type": "content_block_start", "index": block, "content_block": tool_block},
                    "content_block_start",
                )
            )
            frames += [
                sse(
                    {
                        "type": "content_block_delta",
                        "index": block,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                    "content_block_delta",
                )
                for piece in split(call.arguments, call.fragments)
            ]
            frames[-1] += sse({"type": "content_block_stop", "index": block}, "content_block_stop")
            block += 1
        error = {
            "type": "error",
            "error": {"type": reply.error_type or "overloaded_error", "message": "Overloaded"},
        }
        if not await self._tokens(request, response, received, plan, frames, sse(error, "error")):
            return
        usage: dict[str, Any] = {"output_tokens": plan.output_tokens}
        if reply.repeat_usage_in_delta:
            usage = {**anthropic_usage(plan), **usage}
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use" if reply.tool_calls else "end_turn"},
            "usage": usage,
        }
        await response.write(sse(delta, "message_delta"))
        await response.write(sse({"type": "message_stop"}, "message_stop"))
        await response.write_eof()


async def _until_disconnected(request: web.Request) -> None:
    # aiohttp tells a handler nothing when its client goes away (unless it is cancelled, which
    # would lose the moment), so a stall watches the transport.
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(0.005)


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
