"""The simulated provider playing judge, so shadow grading runs on the embedded defaults.

When a request carries the judge's instructions (`shadow.judge`), the simulator answers the way
a judge model would, in the required `A: <0-10>` / `B: <0-10>` form, and the router parses that
reply exactly as it parses a real judge's. The grades are deterministic and plausible: the
harder the conversation looks (longer, more technical), the lower the grades tend to be, and
each answer's grade moves with a hash of its text, so different answers get different grades.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from router_service.chat import ChatMessage
from router_service.shadow.judge import ANSWER_A, ANSWER_B, CONVERSATION, JUDGE_INSTRUCTIONS

__all__ = ["simulated_verdict"]

_TECHNICAL = re.compile(
    r"\b(prove|derive|optimi[sz]e|race|concurren\w*|complexity|algorithm|refactor|debug|"
    r"regex|integral|theorem|calculate|legal|contract)\b|```|[{};=]",
    re.IGNORECASE,
)


def _unit(*parts: str) -> float:
    """A uniform draw in [0, 1) fixed by `parts`."""
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64


def _difficulty(conversation: str) -> float:
    words = len(conversation.split())
    technical = min(1.0, len(_TECHNICAL.findall(conversation)) / 8)
    return min(1.0, 0.35 * min(1.0, words / 400) + 0.35 * technical + 0.3 * _unit(conversation))


def _grade(conversation: str, answer: str, difficulty: float) -> int:
    quality = 0.95 - 0.55 * difficulty + 0.45 * (_unit(conversation, answer) - 0.5)
    return round(10 * min(1.0, max(0.0, quality)))


def simulated_verdict(messages: Sequence[ChatMessage]) -> str | None:
    """The judge's reply to `messages`, or None when they are not a judge request."""
    if not any(m.role == "system" and m.content == JUDGE_INSTRUCTIONS for m in messages):
        return None
    body = next((m.content for m in reversed(messages) if m.role == "user"), "")
    head, _, rest = body.partition(f"\n\n{ANSWER_A}\n")
    answer_a, _, answer_b = rest.partition(f"\n\n{ANSWER_B}\n")
    conversation = head.removeprefix(f"{CONVERSATION}\n")
    difficulty = _difficulty(conversation)
    return (
        f"A: {_grade(conversation, answer_a, difficulty)}\n"
        f"B: {_grade(conversation, answer_b, difficulty)}"
    )
