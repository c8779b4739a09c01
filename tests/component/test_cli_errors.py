"""The command line against a running router: a refused call is one line that says what to
check, and never repeats the key it was given."""

from __future__ import annotations

import asyncio

import pytest

from router_service.cli import main
from tests.support.servers import Running

WRONG_KEY = "sk-wrong-Zq8Secret"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["route", "hi"],
            "llm-router: UNAUTHENTICATED: unknown app key (give the key with --key or "
            "LLM_ROUTER_KEY)\n",
        ),
        (
            ["feedback", "req-1", "--score", "1"],
            "llm-router: UNAUTHENTICATED: unknown app key (give the key with --key or "
            "LLM_ROUTER_KEY)\n",
        ),
        (
            ["budget", "show", "demo"],
            "llm-router: UNAUTHENTICATED: unknown admin key (give the key with --key or "
            "LLM_ROUTER_ADMIN_KEY)\n",
        ),
    ],
)
async def test_a_wrong_key_is_refused_in_one_line_naming_where_the_key_comes_from(
    router: Running, capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    code = await asyncio.to_thread(main, [*argv, "--target", router.target, "--key", WRONG_KEY])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == line
    assert WRONG_KEY not in captured.out + captured.err
