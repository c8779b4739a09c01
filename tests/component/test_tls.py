"""TLS on the gRPC port over real connections: who gets in, a certificate rotated without a
restart, the plaintext health port for probes, and the CLI's --tls-* options."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
import yaml
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router_service._proto import router_pb2 as pb
from router_service._proto import router_pb2_grpc
from router_service.cli import main
from router_service.config import ConfigError
from router_service.server import RouterServer
from tests.support.configs import DEMO_KEY, fast_config, fast_raw
from tests.support.servers import Running, auth, running_router
from tests.support.tls import ServerFiles, chain_pem, routed_model, tls_channel

EXPLAIN = pb.RouteRequest(task="summarization", messages=[pb.Message(role="user", content="Hi")])


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> ServerFiles:
    server_files = ServerFiles(tmp_path)
    server_files.issue(ca)
    return server_files


@asynccontextmanager
async def tls_router(files: ServerFiles, **server: Any) -> AsyncIterator[Running]:
    """A router whose port speaks TLS with `files`; `Running.channel` is a plaintext client."""
    config = fast_config(server={"tls": files.tls(), **server})
    async with running_router(config) as running:
        yield running


async def refused_code(channel: aio.Channel) -> grpc.StatusCode:
    async with channel:
        with pytest.raises(aio.AioRpcError) as error:
            await router_pb2_grpc.RouterStub(channel).Explain(
                EXPLAIN, metadata=auth(DEMO_KEY), timeout=5
            )
    return error.value.code()


async def test_a_client_trusting_the_ca_routes_a_call(files: ServerFiles, ca: trustme.CA) -> None:
    async with tls_router(files) as router, tls_channel(router.target, ca) as channel:
        assert await routed_model(channel) == "glm-5.2"


async def test_plaintext_and_untrusting_clients_are_refused(
    files: ServerFiles, ca: trustme.CA
) -> None:
    async with tls_router(files) as router:
        # Bearer keys never cross the port in the clear: a plaintext client gets nowhere.
        assert await refused_code(router.channel) == grpc.StatusCode.UNAVAILABLE
        other_ca = trustme.CA()
        assert await refused_code(tls_channel(router.target, other_ca)) == (
            grpc.StatusCode.UNAVAILABLE
        )
        async with tls_channel(router.target, ca) as channel:
            assert await routed_model(channel) == "glm-5.2"


async def test_mutual_tls_needs_a_certificate_from_the_client_ca(
    files: ServerFiles, ca: trustme.CA
) -> None:
    client_ca = trustme.CA()
    config = fast_config(server={"tls": files.tls(client_ca=client_ca)})
    async with running_router(config) as router:
        assert await refused_code(tls_channel(router.target, ca)) == grpc.StatusCode.UNAVAILABLE
        stranger = trustme.CA().issue_cert("app@example.com")
        assert await refused_code(tls_channel(router.target, ca, stranger)) == (
            grpc.StatusCode.UNAVAILABLE
        )
        client = client_ca.issue_cert("app@example.com")
        async with tls_channel(router.target, ca, client) as channel:
            assert await routed_model(channel) == "glm-5.2"


async def test_a_rotated_certificate_reaches_new_connections_without_a_restart(
    files: ServerFiles, ca: trustme.CA
) -> None:
    async with tls_router(files) as router:
        before = tls_channel(router.target, ca)
        assert await routed_model(before) == "glm-5.2"
        # cert-manager renews the secret with a certificate from another CA, in place.
        new_ca = trustme.CA()
        files.issue(new_ca)
        async with tls_channel(router.target, new_ca) as channel:
            assert await routed_model(channel) == "glm-5.2"
        assert await refused_code(tls_channel(router.target, ca)) == grpc.StatusCode.UNAVAILABLE
        # A connection made before the rotation keeps its certificate and its calls.
        assert await routed_model(before) == "glm-5.2"
        await before.close()
        # A half-written key keeps the certificate in use rather than breaking the port.
        files.key_file.write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIIE")
        async with tls_channel(router.target, new_ca) as channel:
            assert await routed_model(channel) == "glm-5.2"


async def test_the_health_port_answers_probes_in_plaintext_and_serves_nothing_else(
    files: ServerFiles,
) -> None:
    async with tls_router(files, health_listen="127.0.0.1:0") as router:
        assert router.server.health_port not in (None, router.server.port)
        async with aio.insecure_channel(f"127.0.0.1:{router.server.health_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "router.v1.Router"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(aio.AioRpcError) as error:
                await router_pb2_grpc.RouterStub(channel).Explain(
                    EXPLAIN, metadata=auth(DEMO_KEY), timeout=5
                )
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
            # The same health service as the main port: a drain shows on both.
            await router.server.health.enter_graceful_shutdown()
            reply = await health.Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_without_tls_or_health_listen_nothing_changes(router: Running) -> None:
    assert router.server.health_port is None
    assert await routed_model(router.channel) == "glm-5.2"


async def test_the_cli_routes_over_tls_and_mutual_tls(
    tmp_path: Path, files: ServerFiles, ca: trustme.CA, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_file = tmp_path / "router-ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    route = ["route", "Summarize: TLS works.", "--task", "summarization", "--timeout", "10"]
    async with tls_router(files) as router:
        argv = [*route, "--target", router.target, "--tls-ca", str(ca_file)]
        assert await asyncio.to_thread(main, argv) == 0
        assert "→ glm-5.2 (cheap" in capsys.readouterr().out
        plaintext = [*route, "--target", router.target]
        assert await asyncio.to_thread(main, plaintext) == 1
        err = capsys.readouterr().err
        assert err.startswith("llm-router: UNAVAILABLE: ")
        assert err.endswith(
            "; if the router serves TLS, give --tls-ca FILE (or LLM_ROUTER_TLS_CA)\n"
        )

    client_ca = trustme.CA()
    client = client_ca.issue_cert("cli@example.com")
    client.private_key_pem.write_to_path(key_file := tmp_path / "client.key")
    (cert_file := tmp_path / "client.crt").write_bytes(chain_pem(client))
    config = fast_config(server={"tls": files.tls(client_ca=client_ca)})
    async with running_router(config) as router:
        argv = [*route, "--target", router.target, "--tls-ca", str(ca_file)]
        mutual = [*argv, "--tls-cert", str(cert_file), "--tls-key", str(key_file)]
        assert await asyncio.to_thread(main, mutual) == 0
        assert "→ glm-5.2 (cheap" in capsys.readouterr().out
        assert await asyncio.to_thread(main, argv) == 1
        assert "if it asks for a client certificate, give --tls-cert and --tls-key\n" in (
            capsys.readouterr().err
        )


async def test_a_missing_certificate_stops_the_start_naming_the_file(
    tmp_path: Path, files: ServerFiles
) -> None:
    missing = tmp_path / "absent.crt"
    tls = {"cert_file": str(missing), "key_file": str(files.key_file)}
    server = RouterServer(fast_config(server={"tls": tls}), environ={})
    with pytest.raises(ConfigError, match=f"cannot read TLS certificate file {missing}"):
        await server.start("127.0.0.1:0")
    assert server.port is None


def test_serve_refuses_to_start_on_an_unusable_key_naming_the_file(
    tmp_path: Path, files: ServerFiles
) -> None:
    files.key_file.write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nTOP-SECRET\n-----END PRIVATE KEY-----"
    )
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(fast_raw(server={"tls": files.tls()})))
    done = subprocess.run(
        [sys.executable, "-m", "router_service", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert f"llm-router: TLS key file {files.key_file} holds no valid PEM private key" in (
        done.stderr
    )
    assert "TOP-SECRET" not in done.stderr + done.stdout
