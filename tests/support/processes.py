"""`llm-router serve` replicas as separate processes, for multi-replica tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.redis_server import free_port


@dataclass
class Replica:
    target: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL: no drain, no settle, nothing; as when a node dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def start_replica(
    config: Path,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_level: str = "WARNING",
) -> Replica:
    """One `llm-router serve --config CONFIG` on a free loopback port, its output in `log`;
    `env` defaults to this process's environment without REDIS_URL."""
    target = f"127.0.0.1:{free_port()}"
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "router_service",
                "serve",
                "--config",
                str(config),
                "--listen",
                target,
                "--log-level",
                log_level,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
        )
    return Replica(target, process)


@contextmanager
def replicas(config: Path, count: int, log_dir: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for i in range(count):
            started.append(start_replica(config, log_dir / f"replica-{i}.log"))
        yield started
    finally:
        for replica in started:
            if replica.process.poll() is None:
                replica.process.terminate()
        for replica in started:
            try:
                replica.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(timeout=5)


async def wait_serving(targets: list[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    for target in targets:
        async with aio.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica {target} did not start serving")
                await asyncio.sleep(0.1)
