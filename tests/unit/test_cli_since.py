"""`--since` for export and report."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_service.cli.calllog import parse_since

NOW = 1_746_100_800.0


@given(st.integers(0, 10_000), st.sampled_from([("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]))
def test_relative_durations(amount: int, unit: tuple[str, int]) -> None:
    assert parse_since(f"{amount}{unit[0]}", now=NOW) == NOW - amount * unit[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-05-01", 1_746_057_600.0),
        ("2025-05-01T12:00", NOW),
        ("2025-05-01T14:00+02:00", NOW),
    ],
)
def test_dates_are_utc_unless_they_say_otherwise(text: str, expected: float) -> None:
    assert parse_since(text) == expected


@given(st.text(max_size=20))
def test_anything_else_is_an_argument_error(text: str) -> None:
    try:
        since = parse_since(text, now=NOW)
    except argparse.ArgumentTypeError:
        return
    assert isinstance(since, float)
