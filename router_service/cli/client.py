"""`llm-router route` and `llm-router explain`: a client for trying the service by hand, and
the connection options and channel every command that calls the router shares."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TextIO, overload

if TYPE_CHECKING:
    import grpc
    from grpc import aio

DEFAULT_TARGET = "127.0.0.1:50051"
# The embedded defaults' local development key; real deployments set LLM_ROUTER_KEY.
DEFAULT_KEY = "demo-key"
# RouteRequest.max_output_tokens is an int32.
_INT32_MAX = 2**31 - 1


def token_count(text: str) -> int:
    """An argparse type: a whole number that fits RouteRequest.max_output_tokens."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= _INT32_MAX:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {_INT32_MAX}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a deadline, a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("expected a number of seconds above 0")
    return value


def host_port(text: str) -> str:
    """An argparse type: a gRPC target, which is not a URL."""
    if text.startswith(("http://", "https://", "grpc://")):
        raise argparse.ArgumentTypeError("expected HOST:PORT, not a URL (for TLS give --tls-ca)")
    return text


def register(commands: argparse._SubParsersAction[Any]) -> None:
    for name, run, summary in (
        ("route", _route, "route a prompt and stream the answer"),
        ("explain", _explain, "show where a prompt would be routed, without calling a model"),
    ):
        parser = commands.add_parser(
            name,
            help=summary,
            description=f"{summary.capitalize()}. Prints the routing decision"
            + (
                ", streams the text as it arrives, then usage and cost." if name == "route" else "."
            ),
        )
        parser.add_argument("prompt", help="the user message")
        parser.add_argument("--task", default="default", help="task class (default: default)")
        parser.add_argument("--system", help="a system prompt")
        parser.add_argument(
            "--tier", choices=["auto", "cheap", "frontier"], default="auto", help="tier preference"
        )
        parser.add_argument("--model", default="", help="force this model from the catalog")
        parser.add_argument("--money-movement", action="store_true", help="flag money movement")
        parser.add_argument(
            "--max-output-tokens",
            type=token_count,
            default=0,
            metavar="N",
            help="most tokens in the answer; only models whose context window and output "
            "limit fit it are chosen (default 0: the task's default_max_output_tokens)",
        )
        parser.add_argument(
            "--temperature",
            type=float,
            help="sampling temperature, 0 to 2 (default: unset, the provider's default; "
            "with --cache, 0)",
        )
        parser.add_argument(
            "--cache",
            action="store_true",
            help="opt in to the response cache, which serves temperature-0 requests only: "
            "sends temperature 0 unless --temperature says otherwise, which is refused",
        )
        add_connection_arguments(parser)
        parser.add_argument("--timeout", type=seconds, default=120.0, help="deadline in seconds")
        parser.set_defaults(run=run)


def add_connection_arguments(
    parser: argparse.ArgumentParser,
    *,
    key_env: str = "LLM_ROUTER_KEY",
    default_key: str = DEFAULT_KEY,
    role: str = "app",
) -> None:
    """--target, --key and the TLS options, shared by every command that calls the router."""
    parser.add_argument(
        "--target",
        type=host_port,
        default=os.environ.get("LLM_ROUTER_TARGET", DEFAULT_TARGET),
        help=f"HOST:PORT of the router (env LLM_ROUTER_TARGET, default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get(key_env, default_key),
        help=f"{role} key (env {key_env}, default: the local development key {default_key})",
    )
    parser.set_defaults(key_env=key_env)
    add_tls_arguments(parser)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """--tls-ca (TLS on), --tls-cert and --tls-key (a client certificate for mutual TLS)."""
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=_env_path("LLM_ROUTER_TLS_CA"),
        metavar="FILE",
        help="PEM certificate of the CA that signed the router's certificate: connect with TLS "
        "(env LLM_ROUTER_TLS_CA; default: plaintext, for a local router or behind a mesh)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=_env_path("LLM_ROUTER_TLS_CERT"),
        metavar="FILE",
        help="PEM client certificate (chain) for a router that requires mutual TLS; goes with "
        "--tls-key and --tls-ca (env LLM_ROUTER_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        default=_env_path("LLM_ROUTER_TLS_KEY"),
        metavar="FILE",
        help="PEM private key of --tls-cert (env LLM_ROUTER_TLS_KEY)",
    )


# gRPC's own details when no router was found at the target: nothing listens, or the name
# does not resolve. Other failures to connect are mostly TLS on one side only.
_NOT_THERE = ("errors resolving", "DNS resolution failed")
_NOT_CONNECTED = "failed to connect to all addresses"


def rpc_failure(exc: grpc.RpcError, args: argparse.Namespace) -> str:
    """A failed call, for a person: its status and details, and what to check when no router
    answered at --target, the connection failed, or the key was not accepted."""
    import grpc

    code, details = exc.code(), exc.details() or ""
    text = f"{code.name}: {details}"
    if code != grpc.StatusCode.UNAVAILABLE:
        if code == grpc.StatusCode.UNAUTHENTICATED and getattr(args, "key_env", None):
            text += f" (give the key with --key or {args.key_env})"
        return text
    if details.startswith(_NOT_THERE) or details.endswith("Connection refused"):
        cause = details.rsplit(": ", 1)[-1].strip("[] ")
        return (
            f"{code.name}: cannot reach the router at {args.target} ({cause}); start it with "
            "`llm-router serve`, or give its address with --target or LLM_ROUTER_TARGET"
        )
    if details.startswith(_NOT_CONNECTED):
        if getattr(args, "tls_ca", None) is None:
            return f"{text}; if the router serves TLS, give --tls-ca FILE (or LLM_ROUTER_TLS_CA)"
        return (
            f"{text}; if the router does not serve TLS, leave out --tls-ca; if it asks for a "
            "client certificate, give --tls-cert and --tls-key"
        )
    return text


def _usage_error(message: str) -> NoReturn:
    # As argparse ends a command whose options are wrong, wherever the options are first used.
    print(f"llm-router: {message}", file=sys.stderr)
    raise SystemExit(2)


def _read_pem(path: Path, option: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        _usage_error(f"{option}: cannot read {path}: {exc.strerror}")
    if b"-----BEGIN " not in data:
        _usage_error(f"{option}: {path} is not a PEM file")
    return data


def _channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from --tls-ca/--tls-cert/--tls-key; None: plaintext."""
    import grpc

    client_pair = (args.tls_cert, args.tls_key)
    if args.tls_ca is None:
        if client_pair != (None, None):
            _usage_error("--tls-cert and --tls-key need --tls-ca (they are for TLS)")
        return None
    if None in client_pair and client_pair != (None, None):
        _usage_error("give both --tls-cert and --tls-key, or neither")
    root = _read_pem(args.tls_ca, "--tls-ca")
    if args.tls_cert is None:
        return grpc.ssl_channel_credentials(root)
    return grpc.ssl_channel_credentials(
        root, _read_pem(args.tls_key, "--tls-key"), _read_pem(args.tls_cert, "--tls-cert")
    )


@overload
def open_channel(args: argparse.Namespace, *, use_aio: Literal[False] = False) -> grpc.Channel: ...
@overload
def open_channel(args: argparse.Namespace, *, use_aio: Literal[True]) -> aio.Channel: ...
def open_channel(args: argparse.Namespace, *, use_aio: bool = False) -> grpc.Channel | aio.Channel:
    """A channel to --target (a grpc.aio one with `use_aio`): TLS when --tls-ca is given, else
    plaintext. A TLS option that cannot be used ends the command, naming the option."""
    import grpc
    from grpc import aio

    credentials = _channel_credentials(args)
    if use_aio:
        if credentials is None:
            return aio.insecure_channel(args.target)
        return aio.secure_channel(args.target, credentials)
    if credentials is None:
        return grpc.insecure_channel(args.target)
    return grpc.secure_channel(args.target, credentials)


def _request(args: argparse.Namespace) -> Any:
    from router_service._proto import router_pb2 as pb

    messages = []
    if args.system:
        messages.append(pb.Message(role="system", content=args.system))
    messages.append(pb.Message(role="user", content=args.prompt))
    tiers = {
        "auto": pb.TIER_PREFERENCE_AUTO,
        "cheap": pb.TIER_PREFERENCE_CHEAP,
        "frontier": pb.TIER_PREFERENCE_FRONTIER,
    }
    request = pb.RouteRequest(
        task=args.task,
        messages=messages,
        max_output_tokens=args.max_output_tokens,
        hints=pb.RouteHints(
            tier=tiers[args.tier],
            force_model=args.model,
            money_movement=args.money_movement,
            response_cache=args.cache,
        ),
    )
    temperature = args.temperature
    if args.cache:
        # The router caches temperature-0 requests only: without it the hint would do nothing.
        if temperature is None:
            temperature = 0.0
        elif temperature != 0:
            _usage_error(
                f"--cache serves temperature-0 requests only, not --temperature {temperature:g}"
            )
    if temperature is not None:
        request.temperature = temperature
    return request


def print_decision(decision: Any, out: TextIO) -> None:
    from router_service._proto import router_pb2 as pb

    tier = pb.Tier.Name(decision.tier).removeprefix("TIER_").lower()
    out.write(f"→ {decision.model} ({tier}, via {decision.provider})")
    if decision.classifier_version:
        out.write(
            f"  difficulty {decision.difficulty:.3f} / threshold {decision.threshold:.3f}"
            f"  [{decision.classifier_version}]"
        )
    out.write(
        f"\n  task {decision.task}, arm {decision.experiment_arm}, request {decision.request_id}\n"
    )
    for reason in decision.reasons:
        out.write(f"  · {reason}\n")


def _print_summary(done: Any, out: TextIO) -> None:
    u = done.usage
    out.write(
        f"\n\n✓ {done.finish_reason} · {done.model} · input {u.input_tokens} "
        f"(cached {u.cached_input_tokens}, cache writes {u.cache_write_tokens}) · "
        f"output {u.output_tokens} · ${done.cost_usd:.6f} · "
        f"first token {done.ttft_ms:.0f} ms · total {done.latency_ms:.0f} ms"
        + (" · from response cache" if done.served_from_cache else "")
        + "\n"
    )
    if len(done.attempts) > 1:
        from router_service._proto import router_pb2 as pb

        for a in done.attempts:
            outcome = pb.AttemptOutcome.Name(a.outcome).removeprefix("ATTEMPT_OUTCOME_").lower()
            out.write(f"  attempt {a.model} via {a.provider}: {outcome} {a.error}\n")


def _call(args: argparse.Namespace, explain: bool) -> int:
    import grpc

    from router_service._proto import router_pb2_grpc

    out = sys.stdout
    metadata = (("authorization", f"Bearer {args.key}"),)
    streamed = False  # text is on the current line: an error starts a new one
    with open_channel(args) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        try:
            if explain:
                print_decision(
                    stub.Explain(_request(args), metadata=metadata, timeout=args.timeout), out
                )
                return 0
            for event in stub.Route(_request(args), metadata=metadata, timeout=args.timeout):
                kind = event.WhichOneof("event")
                if kind == "decision":
                    print_decision(event.decision, out)
                    out.write("\n")
                elif kind == "delta":
                    out.write(event.delta.text)
                    out.flush()
                    streamed = True
                else:
                    _print_summary(event.done, out)
                    streamed = False
        except grpc.RpcError as exc:
            out.flush()
            newline = "\n" if streamed else ""
            print(f"{newline}llm-router: {rpc_failure(exc, args)}", file=sys.stderr)
            return 1
    return 0


def _route(args: argparse.Namespace) -> int:
    return _call(args, explain=False)


def _explain(args: argparse.Namespace) -> int:
    return _call(args, explain=True)
