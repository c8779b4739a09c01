"""Progress bars for the long steps of training and evaluation.

On stderr, and only when stderr is a terminal: a log file or a pipe gets each step's one-line
message instead of a bar redrawn with carriage returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(items: Iterable[T], label: str, unit: str, total: int | None = None) -> tqdm[T]:
    """`items`, drawing a bar named `label` as they are taken, when stderr is a terminal."""
    # disable=None: tqdm's own test of whether its stream is a terminal.
    return tqdm(items, desc=label, unit=unit, total=total, leave=False, disable=None)
