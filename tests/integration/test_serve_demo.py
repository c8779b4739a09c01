"""`make run`'s command: `llm-router serve --demo` on the embedded defaults serves, streams one
routed answer from itself through a real gRPC client, and keeps serving until SIGTERM."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.redis_server import free_port

pytestmark = pytest.mark.integration


def read_until(process: subprocess.Popen[bytes], marker: bytes, timeout_s: float) -> bytes:
    assert process.stdout is not None
    out = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while marker not in out:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {marker!r} in time; output so far:\n{out.decode()}"
            if selector.select(remaining):
                chunk = os.read(process.stdout.fileno(), 65536)
                assert chunk, f"output ended before {marker!r}:\n{out.decode()}"
                out += chunk
    return out


def test_serve_demo_streams_a_routed_answer_then_keeps_serving(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLM_ROUTER_"))}
    env.pop("REDIS_URL", None)
    listen = f"127.0.0.1:{free_port()}"
    with subprocess.Popen(
        [sys.executable, "-m", "router_service", "serve", "--demo", "--listen", listen],
        cwd=tmp_path,  # the embedded defaults write their call log under ./var
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            out = read_until(process, b"still serving", timeout_s=60).decode()
            lines = out.splitlines()
            assert any(line.startswith("$ llm-router route") for line in lines)
            [decision] = [line for line in lines if line.startswith("→ ")]
            assert "difficulty" in decision  # the classifier scored it
            [done] = [line for line in lines if line.startswith("✓ ")]
            assert done.startswith("✓ stop") and "$0.0" in done
            assert process.poll() is None  # still serving
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_a_taken_port_stops_the_start_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(
            [sys.executable, "-m", "router_service", "serve", "--listen", listen],
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"llm-router: cannot listen on {listen}" in done.stderr.decode()
    assert b"Traceback" not in done.stderr
