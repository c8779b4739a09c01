"""`llm-router budget set|clear|show`: an app's monthly budget, through the Admin service."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from router_service.cli.admin_client import add_admin_arguments, admin_call


def register(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "budget",
        help="set, clear or show an app's monthly budget",
        description="Set, clear or show an app's monthly budget (UTC calendar month) through the "
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
    clear_parser = actions.add_parser(
        "clear",
        help="drop the limit set with `set`: the configured budget applies again",
        description="Drop the limit `budget set` gave an app, on every replica sharing the "
        "store: its configured budget (apps.<app>.budget), or none, applies again.",
    )
    clear_parser.add_argument("app", help="the app's name in the configuration")
    clear_parser.set_defaults(run=_clear)
    show_parser = actions.add_parser(
        "show", help="show the limit, spend and open reservations of this month"
    )
    show_parser.add_argument("app", help="the app's name in the configuration")
    show_parser.set_defaults(run=_show)
    for sub in (set_parser, clear_parser, show_parser):
        add_admin_arguments(sub)


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


def _budget_call(args: argparse.Namespace, method: str, request: Any) -> int:
    response = admin_call(args, method, request)
    if response is None:
        return 1
    print_budget(response.budget if method == "SetBudget" else response, sys.stdout)
    return 0


def _set(args: argparse.Namespace) -> int:
    from router_service._proto import router_pb2 as pb

    request = pb.SetBudgetRequest(
        app_id=args.app, monthly_limit_usd=args.limit_usd, soft_threshold=args.soft
    )
    return _budget_call(args, "SetBudget", request)


def _show(args: argparse.Namespace) -> int:
    from router_service._proto import router_pb2 as pb

    return _budget_call(args, "GetBudget", pb.GetBudgetRequest(app_id=args.app))


def _clear(args: argparse.Namespace) -> int:
    from router_service._proto import router_pb2 as pb

    return _budget_call(args, "SetBudget", pb.SetBudgetRequest(app_id=args.app, clear=True))
