"""What the Admin subcommands share: where the router is, the admin key, and one call."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from router_service.cli.client import add_connection_arguments, open_channel, rpc_failure, seconds

# The embedded defaults' local admin key; real deployments set LLM_ROUTER_ADMIN_KEY.
DEFAULT_ADMIN_KEY = "demo-admin-key"


def add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(
        parser, key_env="LLM_ROUTER_ADMIN_KEY", default_key=DEFAULT_ADMIN_KEY, role="admin"
    )
    parser.add_argument("--timeout", type=seconds, default=10.0, help="deadline in seconds")


def admin_call(args: argparse.Namespace, method: str, request: Any) -> Any | None:
    """The response of `Admin.<method>`, or None after printing why the call failed."""
    import grpc

    from router_service._proto import router_pb2_grpc

    metadata = (("authorization", f"Bearer {args.key}"),)
    with open_channel(args) as channel:
        stub = router_pb2_grpc.AdminStub(channel)
        try:
            return getattr(stub, method)(request, metadata=metadata, timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"llm-router: {rpc_failure(exc, args)}", file=sys.stderr)
            return None
