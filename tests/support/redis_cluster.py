"""A local three-node Redis Cluster for tests: three `redis-server --cluster-enabled yes`
processes on free ports, joined with `redis-cli --cluster create`, stopped afterwards."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from tests.support.redis_server import free_port, redis_server_process


def _cluster_ok(port: int) -> bool:
    cli = shutil.which("redis-cli")
    assert cli is not None
    info = subprocess.run(
        [cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, check=False
    )
    return "cluster_state:ok" in info.stdout


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[int]]:
    """The ports of a running cluster with every slot assigned."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed; `make setup` installs it")
    with ExitStack() as stack:
        ports = []
        for _ in range(nodes):
            port, _proc = stack.enter_context(
                redis_server_process(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-node-timeout",
                    "2000",
                )
            )
            ports.append(port)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while not all(_cluster_ok(p) for p in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield ports
