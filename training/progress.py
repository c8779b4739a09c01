"""Progress bars for the long steps of training, evaluation and the call log's export.

On stderr, and only when stderr is a terminal: a log file or a pipe gets each step's one-line
message instead of a bar redrawn with carriage returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn, TypeVar

from tqdm import tqdm

__all__ = ["meter", "progress"]

T = TypeVar("T")


def progress(items: Iterable[T], label: str, unit: str, total: int | None = None) -> tqdm[T]:
    """`items`, drawing a bar named `label` as they are taken, when stderr is a terminal."""
    return _bar(items, label, unit, total, scale=False)


def meter(label: str, unit: str, total: int | None = None) -> tqdm[NoReturn]:
    """A bar named `label` that its caller advances with `update(amount)`, when stderr is a
    terminal: for a loop too hot to tick per item, which reports every so many items (or an
    amount other than items, such as bytes). Amounts are shown scaled (12.3k, 45.6M)."""
    return _bar(None, label, unit, total, scale=True)


def _bar(
    items: Iterable[T] | None, label: str, unit: str, total: int | None, *, scale: bool
) -> tqdm[T]:
    # disable=None: tqdm's own test of whether its stream is a terminal.
    return tqdm(
        items, desc=label, unit=unit, unit_scale=scale, total=total, leave=False, disable=None
    )
