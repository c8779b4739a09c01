"""What the provider adapters and the whole gateway add to a streamed call, side by side.

The fake provider (tests/support/fake_provider.py) runs in its own process on loopback and
answers every request at once with a 50-token stream. Three ways of getting that stream are
timed in one run, interleaved so that machine noise hits them alike:

- direct:   httpx streams the raw body and splits it into SSE lines (what any client must do);
- adapter:  the router's adapter (OpenAI-compatible and Anthropic), events out, usage parsed;
- gateway:  `llm-router serve` in its own process, called over gRPC (`Route`), first delta and
            done event; its CPU per stream is read from /proc.

Figures: time to first token (p50, p90) and CPU per stream; the adapter's and gateway's
differences from direct, and their ratios. Run: `.venv/bin/python -m benchmarks.provider_overhead`
(`--streams N`); results in benchmarks/results/provider_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from grpc import aio

from router_service._proto import router_pb2 as pb
from router_service._proto import router_pb2_grpc
from router_service.chat import ChatMessage
from router_service.config import AnthropicProviderConfig, OpenAIProviderConfig
from router_service.providers.anthropic import AnthropicProvider
from router_service.providers.base import Provider, ProviderRequest, StreamEnd, TextDelta
from router_service.providers.openai_compat import OpenAICompatProvider

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TOKENS = 50
REQUEST = ProviderRequest(
    model="glm-5.2",
    messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Summarize the report.")),
    tools=(),
    max_output_tokens=256,
    temperature=None,
    prompt_tokens=20,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Arm:
    """One way of getting the stream: its first-token times and CPU per stream."""

    def __init__(self, name: str, run: Callable[[], Awaitable[float]]) -> None:
        self.name = name
        self.run = run
        self.ttft_ms: list[float] = []
        self.cpu_ms: list[float] = []

    async def once(self) -> None:
        cpu = time.process_time()
        self.ttft_ms.append(await self.run() * 1000)
        self.cpu_ms.append((time.process_time() - cpu) * 1000)

    def summary(self) -> dict[str, float]:
        deciles = statistics.quantiles(self.ttft_ms, n=10)
        return {
            "ttft_p50_ms": statistics.median(self.ttft_ms),
            "ttft_p90_ms": deciles[8],
            "cpu_per_stream_ms": statistics.mean(self.cpu_ms),
        }


async def direct(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
) -> float:
    started = time.perf_counter()
    first = 0.0
    async with client.stream("POST", url, content=body, headers=headers) as response:
        buffer = b""
        async for chunk in response.aiter_bytes():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if not first and any(b"content" in line or b"text_delta" in line for line in lines):
                first = time.perf_counter() - started
    return first


async def through_adapter(provider: Provider) -> float:
    started = time.perf_counter()
    first = 0.0
    async for batch in provider.stream(REQUEST):
        for event in batch:
            if not first and type(event) is TextDelta:
                first = time.perf_counter() - started
            elif type(event) is StreamEnd:
                assert event.usage.output_tokens == TOKENS
    return first


async def through_gateway(stub: router_pb2_grpc.RouterStub) -> float:
    request = pb.RouteRequest(
        task="summarization",
        messages=[pb.Message(role="user", content="Summarize the report.")],
        hints=pb.RouteHints(tier=pb.TIER_PREFERENCE_CHEAP),
    )
    started = time.perf_counter()
    first = 0.0
    async for event in stub.Route(request, metadata=(("authorization", "Bearer demo-key"),)):
        if not first and event.WhichOneof("event") == "delta":
            first = time.perf_counter() - started
    return first


def start_gateway(fake_url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    raw = yaml.safe_load((ROOT / "config/examples/openai-compatible.yaml").read_text())
    config = workdir / "router.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OPENAI_BASE_URL": f"{fake_url}/v1", "OPENAI_API_KEY": "bench-key"}
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "router_service", "serve", "--config", str(config)),
            *("--listen", f"127.0.0.1:{port}", "--log-level", "WARNING"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def measure(
    streams: int, fake_url: str, gateway_port: int, gateway_pid: int
) -> dict[str, Any]:
    env = {"KEY": "bench-key"}
    async with httpx.AsyncClient() as client:
        openai = OpenAICompatProvider(
            "fake-openai",
            OpenAIProviderConfig(kind="openai", base_url=f"{fake_url}/v1", api_key_env="KEY"),
            client,
            env,
        )
        anthropic = AnthropicProvider(
            "fake-anthropic",
            AnthropicProviderConfig(kind="anthropic", base_url=fake_url, api_key_env="KEY"),
            client,
            env,
        )
        openai_body = json.dumps(
            {
                "model": "glm-5.2",
                "messages": [{"role": "user", "content": "Summarize the report."}],
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        ).encode()
        anthropic_body = json.dumps(
            {
                "model": "glm-5.2",
                "max_tokens": 256,
                "messages": [{"role": "user", "content": "Summarize the report."}],
                "stream": True,
            }
        ).encode()
        headers = {"content-type": "application/json", "authorization": "Bearer bench-key"}
        channel = aio.insecure_channel(f"127.0.0.1:{gateway_port}")
        stub = router_pb2_grpc.RouterStub(channel)
        arms = [
            Arm(
                "openai direct",
                lambda: direct(client, f"{fake_url}/v1/chat/completions", openai_body, headers),
            ),
            Arm("openai adapter", lambda: through_adapter(openai)),
            Arm(
                "anthropic direct",
                lambda: direct(client, f"{fake_url}/v1/messages", anthropic_body, headers),
            ),
            Arm("anthropic adapter", lambda: through_adapter(anthropic)),
            Arm("gateway (gRPC Route)", lambda: through_gateway(stub)),
        ]
        for arm in arms:  # warm connections, imports and caches
            for _ in range(10):
                await arm.once()
            arm.ttft_ms.clear()
            arm.cpu_ms.clear()
        gateway_cpu = 0.0
        for _ in range(streams):
            for arm in arms:
                before = cpu_seconds(gateway_pid) if arm.name.startswith("gateway") else 0.0
                await arm.once()
                if arm.name.startswith("gateway"):
                    gateway_cpu += cpu_seconds(gateway_pid) - before
        await channel.close()
    results = {arm.name: arm.summary() for arm in arms}
    results["gateway (gRPC Route)"]["server_cpu_per_stream_ms"] = gateway_cpu / streams * 1000
    return results


def report(results: dict[str, Any], streams: int) -> dict[str, Any]:
    print(f"\n{TOKENS}-token streams from the fake provider on loopback, {streams} per arm\n")
    print(f"{'arm':24} {'TTFT p50':>10} {'TTFT p90':>10} {'CPU/stream':>11}")
    for name, r in results.items():
        print(
            f"{name:24} {r['ttft_p50_ms']:9.3f}ms {r['ttft_p90_ms']:9.3f}ms "
            f"{r['cpu_per_stream_ms']:10.3f}ms"
        )
    comparisons = {}
    for kind in ("openai", "anthropic"):
        base, adapter = results[f"{kind} direct"], results[f"{kind} adapter"]
        comparisons[f"{kind} adapter vs direct"] = {
            "ttft_p50_added_ms": adapter["ttft_p50_ms"] - base["ttft_p50_ms"],
            "ttft_p50_ratio": adapter["ttft_p50_ms"] / base["ttft_p50_ms"],
            "cpu_added_ms": adapter["cpu_per_stream_ms"] - base["cpu_per_stream_ms"],
            "cpu_ratio": adapter["cpu_per_stream_ms"] / base["cpu_per_stream_ms"],
        }
    gateway, base = results["gateway (gRPC Route)"], results["openai direct"]
    comparisons["gateway vs direct"] = {
        "ttft_p50_added_ms": gateway["ttft_p50_ms"] - base["ttft_p50_ms"],
        "ttft_p50_ratio": gateway["ttft_p50_ms"] / base["ttft_p50_ms"],
        "server_cpu_per_stream_ms": gateway["server_cpu_per_stream_ms"],
    }
    print()
    for name, c in comparisons.items():
        print(f"{name:28} " + "  ".join(f"{k} {v:.3f}" for k, v in c.items()))
    return comparisons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    args = parser.parse_args()
    fake_port, gateway_port = free_port(), free_port()
    fake = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.support.fake_provider"),
            *("--port", str(fake_port), "--tokens", str(TOKENS)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    with tempfile.TemporaryDirectory() as workdir:
        gateway = start_gateway(f"http://127.0.0.1:{fake_port}", gateway_port, Path(workdir))
        try:
            wait_for_port(fake_port, fake)
            wait_for_port(gateway_port, gateway)
            results = asyncio.run(
                measure(args.streams, f"http://127.0.0.1:{fake_port}", gateway_port, gateway.pid)
            )
        finally:
            for proc in (gateway, fake):
                proc.terminate()
                proc.wait(timeout=20)
    comparisons = report(results, args.streams)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "provider_overhead.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "provider_overhead",
                "tokens_per_stream": TOKENS,
                "streams_per_arm": args.streams,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "arms": results,
                "comparisons": comparisons,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
