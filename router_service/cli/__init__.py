"""The `llm-router` command: one entry point, one subcommand per job.

Each subcommand lives in its own module and imports what it needs only when it runs, so
`llm-router --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
LLM Router: a gRPC gateway that sends each LLM call to the cheapest model that clears the
quality bar, streams the answer back, and records what it cost.

Start the service with `llm-router serve` (embedded defaults: simulated providers, no setup),
then try `llm-router route "Summarize this ..." --task summarization`.
"""


def build_parser() -> argparse.ArgumentParser:
    from router_service.cli import budget, calllog, classifier_admin, client, serve, traffic
    from training import cli as training_cli

    parser = argparse.ArgumentParser(
        prog="llm-router",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    serve.register(commands)
    client.register(commands)
    budget.register(commands)
    classifier_admin.register(commands)
    traffic.register(commands)
    calllog.register(commands)
    training_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
