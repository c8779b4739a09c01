"""Certificates for TLS tests (trustme CAs), written where `server.tls` points, and clients that
trust a given CA."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import trustme
from grpc import aio

from router_service._proto import router_pb2 as pb
from router_service._proto import router_pb2_grpc
from tests.support.configs import DEMO_KEY
from tests.support.servers import auth

# The names the router's certificates are issued for: tests connect to 127.0.0.1.
SERVER_NAMES = ("localhost", "127.0.0.1")


def chain_pem(cert: trustme.LeafCert) -> bytes:
    return b"".join(blob.bytes() for blob in cert.cert_chain_pems)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` in one step (a new inode), as a secret volume's rotation does."""
    partial = path.with_name(path.name + ".new")
    partial.write_bytes(data)
    os.replace(partial, path)


@dataclass
class ServerFiles:
    """The certificate and key files of `server.tls`, in a directory of the test's own."""

    directory: Path

    @property
    def cert_file(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.directory / "tls.key"

    def issue(self, ca: trustme.CA) -> None:
        """Write a certificate for SERVER_NAMES signed by `ca`, and its key."""
        cert = ca.issue_cert(*SERVER_NAMES)
        write_atomically(self.cert_file, chain_pem(cert))
        write_atomically(self.key_file, cert.private_key_pem.bytes())

    def tls(self, client_ca: trustme.CA | None = None) -> dict[str, Any]:
        """The `server.tls` section for these files (mutual TLS with `client_ca`)."""
        section: dict[str, Any] = {"cert_file": str(self.cert_file), "key_file": str(self.key_file)}
        if client_ca is not None:
            ca_file = self.directory / "client-ca.crt"
            client_ca.cert_pem.write_to_path(ca_file)
            section["client_ca_file"] = str(ca_file)
        return section


def tls_channel(
    target: str, trusted: trustme.CA, client: trustme.LeafCert | None = None
) -> aio.Channel:
    """A channel that trusts only `trusted`, presenting `client`'s certificate when given."""
    credentials = grpc.ssl_channel_credentials(
        trusted.cert_pem.bytes(),
        None if client is None else client.private_key_pem.bytes(),
        None if client is None else chain_pem(client),
    )
    # A connection of its own: a subchannel shared with an earlier channel would reuse a
    # handshake made before the certificate changed.
    return aio.secure_channel(target, credentials, options=[("grpc.use_local_subchannel_pool", 1)])


async def routed_model(channel: aio.Channel) -> str:
    """Route one short request over `channel`; the model that answered."""
    request = pb.RouteRequest(
        task="summarization", messages=[pb.Message(role="user", content="Summarize: TLS works.")]
    )
    router = router_pb2_grpc.RouterStub(channel)
    events = [e async for e in router.Route(request, metadata=auth(DEMO_KEY), timeout=10)]
    return str(events[-1].done.model)
