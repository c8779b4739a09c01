"""`llm-router serve`: run the gRPC service."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any


def add_config_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--config FILE`, repeated: the files `load_config` lays over each other, in order."""
    parser.add_argument(
        "--config", type=Path, action="append", default=[], metavar="FILE", help=help_text
    )


def register(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the gRPC service",
        description=(
            "Run the router's gRPC service (Router, Admin, health, reflection) until SIGTERM or "
            "Ctrl-C, then drain in-flight calls. Without --config it runs on the embedded "
            "defaults: simulated providers, an in-process store, the shipped classifier and "
            "the local development app 'demo' (key 'demo-key')."
        ),
    )
    add_config_argument(
        parser,
        "YAML config file (default: the embedded defaults); repeated, each file is laid over "
        "the ones before it: mappings merge key by key, other values replace, null removes a key",
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="override server.listen")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="lowest level of log messages printed to stderr (default INFO; DEBUG also shows "
        "each provider HTTP request)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="once SERVING, stream one routed answer from the server as a client would "
        "(`llm-router route` against it, with LLM_ROUTER_KEY or the local development key), "
        "then keep serving",
    )
    parser.set_defaults(run=run)


DEMO_PROMPT = (
    "Summarize this status update for the team: the deploy moved to Thursday and the API "
    "freeze starts Monday."
)


async def _demo(port: int) -> None:
    from router_service.cli import build_parser

    target = f"127.0.0.1:{port}"
    route = ["route", DEMO_PROMPT, "--task", "summarization", "--target", target]
    args = build_parser().parse_args([*route, "--timeout", "60"])
    shown = f'"{DEMO_PROMPT}" --task summarization --target {target}'
    print(f"\n$ llm-router route {shown}", flush=True)
    await asyncio.to_thread(args.run, args)
    print("\n(still serving; Ctrl-C stops it)", flush=True)


def run(args: argparse.Namespace) -> int:
    from router_service.config import ConfigError, load_config
    from router_service.errors import ArtifactRejected
    from router_service.server import serve

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.log_level != "DEBUG":
        # httpx logs every provider request at INFO: noise at this volume (the call log
        # records each call). Its warnings still show, and all of it with --log-level DEBUG.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = load_config(*args.config)
        demo = args.demo
        if demo and config.server.tls is not None and not os.environ.get("LLM_ROUTER_TLS_CA"):
            # The demo call is a client like any other: over TLS it needs the CA to trust.
            print(
                "llm-router: --demo skipped: server.tls is on; set LLM_ROUTER_TLS_CA to the CA "
                "that signed its certificate",
                file=sys.stderr,
            )
            demo = False
        asyncio.run(serve(config, args.listen, when_serving=_demo if demo else None))
    except ConfigError as exc:
        print(f"llm-router: {exc}", file=sys.stderr)
        return 2
    except ArtifactRejected as exc:
        print(f"llm-router: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"llm-router: {exc}", file=sys.stderr)
        return 1
    return 0
