"""`llm-router budget set|show`: an app's monthly budget, through the Admin service."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

DEFAULT_TARGET = "127.0.0.1:50051"
# The embedded defaults' local admin key; real deployments set LLM_ROUTER_ADMIN_KEY.
DEFAULT_ADMIN_KEY = "demo-admin-key"


def register(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "budget",
        help="set or show an app's monthly budget",
        description="Set or show an app's monthly budget (UTC calendar month) through the "
        "Admin service; needs an admin key.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    set_parser = actions.add_parser(
        "set",
        help="set the monthly limit and soft threshold",
        description="Set an app's monthly limit; it overrides the configured budget on every "
        "replica sharing the store.",
    )
    set_parser.add_argument("app", help="the app's name in the configuration")
    set_parser.add_argument("--limit-usd", type=float, required=True, help="monthly limit in USD")
    set_parser.add_argument(
        "--soft",
        type=float,
        default=0.0,
        help="share of the limit past which requests downgrade to cheap (default 0.8)",
    )
    set_parser.set_defaults(run=_set)
    show_parser = actions.add_parser(
        "show", help="show the limit, spend and open reservations of this month"
    )
    show_parser.add_argument("app", help="the app's name in the configuration")
    show_parser.set_defaults(run=_show)
    for sub in (set_parser, show_parser):
        sub.add_argument(
            "--target",
            default=os.environ.get("LLM_ROUTER_TARGET", DEFAULT_TARGET),
            help=f"HOST:PORT of the router (env LLM_ROUTER_TARGET, default {DEFAULT_TARGET})",
        )
        sub.add_argument(
            "--key",
            default=os.environ.get("LLM_ROUTER_ADMIN_KEY", DEFAULT_ADMIN_KEY),
            help="admin key (env LLM_ROUTER_ADMIN_KEY, default: the local key demo-admin-key)",
        )
        sub.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")


def _money(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 100 else f"${usd:.6f}"


def print_budget(budget: Any, out: TextIO) -> None:
    out.write(f"app {budget.app_id} · {budget.period}\n")
    if not budget.has_limit:
        out.write(
            f"  no limit · spent {_money(budget.spent_usd)} · "
            f"held by calls in flight {_money(budget.reserved_usd)}\n"
        )
        return
    limit = budget.monthly_limit_usd
    used = budget.spent_usd / limit if limit else 1.0
    out.write(
        f"  limit {_money(limit)} · spent {_money(budget.spent_usd)} ({used:.1%}) · "
        f"held by calls in flight {_money(budget.reserved_usd)}\n"
        f"  soft threshold {budget.soft_threshold:.0%} · state {budget.state}\n"
    )


def _admin_call(args: argparse.Namespace, method: str, request: Any) -> int:
    import grpc

    from router_service._proto import router_pb2_grpc

    metadata = (("authorization", f"Bearer {args.key}"),)
    with grpc.insecure_channel(args.target) as channel:
        stub = router_pb2_grpc.AdminStub(channel)
        try:
            response = getattr(stub, method)(request, metadata=metadata, timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"llm-router: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print_budget(response.budget if method == "SetBudget" else response, sys.stdout)
    return 0


def _set(args: argparse.Namespace) -> int:
    from router_service._proto import router_pb2 as pb

    request = pb.SetBudgetRequest(
        app_id=args.app, monthly_limit_usd=args.limit_usd, soft_threshold=args.soft
    )
    return _admin_call(args, "SetBudget", request)


def _show(args: argparse.Namespace) -> int:
    from router_service._proto import router_pb2 as pb

    return _admin_call(args, "GetBudget", pb.GetBudgetRequest(app_id=args.app))
