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


def _not_utf8(args: argparse.Namespace) -> str | None:
    """The first text argument that is not valid UTF-8, by the name an error calls it; None
    when all are.

    Python hands on argument bytes that are not UTF-8 as lone surrogates (PEP 383); protobuf,
    gRPC and most libraries refuse those with a UnicodeEncodeError deep inside a command, so
    every command's text arguments are checked here, before any work. (Paths are `Path`s, not
    text: a file name need not be UTF-8.)
    """
    for dest, value in vars(args).items():
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            if not isinstance(text, str):
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return "the prompt" if dest == "prompt" else "--" + dest.replace("_", "-")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (invalid := _not_utf8(args)) is not None:
        print(f"llm-router: {invalid} is not valid UTF-8", file=sys.stderr)
        return 2
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
