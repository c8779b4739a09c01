"""`llm-router --help`: every subcommand and every argument says what it is for."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from router_service.cli import build_parser


def parsers(
    parser: argparse.ArgumentParser, command: str = "llm-router"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield command, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{command} {name}")


def test_every_argument_has_help() -> None:
    missing = [
        f"{command} {'/'.join(action.option_strings) or action.dest}"
        for command, parser in parsers(build_parser())
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []


def test_every_subcommand_has_help() -> None:
    missing = [
        f"{command} {choice.dest}"
        for command, parser in parsers(build_parser())
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
        if not choice.help
    ]
    assert missing == []


def test_promote_help_explains_min_rows(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["promote", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "with outcomes of both --weak and --strong" in text
    assert "rows lacking either model's outcome do not count" in text


@pytest.mark.parametrize(
    ("command", "says"),
    [
        # train refuses to replace what is not an artifact (tests/unit/test_training_cli.py).
        (["train"], "replacing the artifact there (a file, or a directory that holds something"),
        # The router reads the path, not the command.
        (["classifier", "reload"], "a relative path is taken from the router's working"),
    ],
)
def test_help_says_what_the_command_does_with_a_path(
    command: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    assert says in " ".join(capsys.readouterr().out.split())
