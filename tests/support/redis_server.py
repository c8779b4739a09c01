"""A real Redis for tests: REDIS_URL when set, else 127.0.0.1:6379 when reachable, else a
`redis-server` started on a free port (and stopped afterwards). Never a skip."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOCAL = ("127.0.0.1", 6379)

# A script that keeps Redis busy (every other client waits) for ARGV[1] milliseconds.
BUSY = """
local function us() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local stop = us() + ARGV[1] * 1000
repeat until us() >= stop
return 1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(7).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server_process(
    *extra: str, port: int | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A fresh `redis-server` on `port` (default: a free one) with nothing persisted."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; `make setup` installs it")
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="llm-router-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _reachable("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.02)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if _reachable(*LOCAL):
        yield f"redis://{LOCAL[0]}:{LOCAL[1]}/0"
        return
    with redis_server_process() as (port, _):
        yield f"redis://127.0.0.1:{port}/0"
