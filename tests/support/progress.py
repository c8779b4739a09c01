"""Stand-ins for where progress goes: stderr that says it is a terminal (bars are drawn only on
one), and a bar that keeps what it is told."""

from __future__ import annotations

import io


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Recorder:
    """A progress bar (`router_service.calllog.reader.Progress`) that keeps its updates."""

    def __init__(self) -> None:
        self.updates: list[int] = []

    def update(self, n: int) -> None:
        self.updates.append(n)
