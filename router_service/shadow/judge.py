"""The judge's prompt and the parsing of its verdict. Pure: no I/O, no clock.

The judge sees the conversation and two answers labelled A and B, never which model wrote
which; which answer is A follows from the request id, so position bias averages out over many
calls and a given call is always presented the same way. It must reply with two lines,
`A: <0-10>` and `B: <0-10>`; anything else is a `JudgeError`, never a guessed grade.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from router_service.chat import ChatMessage, ChatRequest, Hints

__all__ = [
    "ANSWER_A",
    "ANSWER_B",
    "CONVERSATION",
    "JUDGE_INSTRUCTIONS",
    "JudgeError",
    "Verdict",
    "format_verdict",
    "judge_request",
    "parse_verdict",
    "served_is_a",
]

JUDGE_INSTRUCTIONS = (
    "You are an impartial judge of AI assistants' answers. You are shown a conversation and "
    "two candidate answers to its last user message, labelled A and B. Rate each answer's "
    "correctness and helpfulness for that message from 0 (wrong or useless) to 10 (fully "
    "correct and helpful). Judge each answer on its own merits; ignore its length, style and "
    "position. Reply with exactly two lines and nothing else:\nA: <score>\nB: <score>"
)
CONVERSATION = "[Conversation]"
ANSWER_A = "[Answer A]"
ANSWER_B = "[Answer B]"
SCALE = 10.0
JUDGE_TASK = "judge"
# Two short lines; a little room for a judge that adds "/10".
JUDGE_MAX_OUTPUT_TOKENS = 24
# A reasoning judge spends output tokens thinking before it writes the two lines (they count
# against the same limit): room for that as well.
REASONING_JUDGE_MAX_OUTPUT_TOKENS = 2048

_LINE = re.compile(r"^\s*([AB])\s*[:=]\s*(\d{1,2}(?:\.\d+)?)\s*(?:/\s*10)?\s*$", re.IGNORECASE)


# Reasoning a model writes inline before its answer (DeepSeek-R1 and others served over an
# OpenAI-compatible API), and a Markdown code fence around the two lines.
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"\s*```\w*\s*")


class JudgeError(ValueError):
    """The judge's reply is not a verdict in the required format."""


@dataclass(frozen=True, slots=True)
class Verdict:
    # Grades in [0, 1].
    a: float
    b: float


def served_is_a(request_id: str) -> bool:
    return hashlib.blake2b(request_id.encode(), digest_size=1).digest()[0] & 1 == 0


def _transcript(messages: Sequence[ChatMessage]) -> str:
    return "\n".join(f"{m.role}: {m.content}" for m in messages if m.role != "system")


def judge_request(
    request_id: str,
    conversation: Sequence[ChatMessage],
    answer_a: str,
    answer_b: str,
    *,
    judge_model: str,
    reasoning: bool = False,
) -> ChatRequest:
    """The chat request that asks `judge_model` to grade `answer_a` and `answer_b` (a
    `reasoning` model gets room to think first)."""
    body = (
        f"{CONVERSATION}\n{_transcript(conversation)}\n\n"
        f"{ANSWER_A}\n{answer_a}\n\n{ANSWER_B}\n{answer_b}"
    )
    return ChatRequest(
        request_id=request_id,
        task=JUDGE_TASK,
        messages=(ChatMessage("system", JUDGE_INSTRUCTIONS), ChatMessage("user", body)),
        max_output_tokens=REASONING_JUDGE_MAX_OUTPUT_TOKENS
        if reasoning
        else JUDGE_MAX_OUTPUT_TOKENS,
        temperature=0.0,
        hints=Hints(force_model=judge_model),
    )


def format_verdict(a: float, b: float) -> str:
    """A verdict as the judge is asked to write it (grades in [0, 1], written out of 10)."""
    return f"A: {a * SCALE:g}\nB: {b * SCALE:g}"


def parse_verdict(text: str) -> Verdict:
    """The two grades of a reply in the required form. What models wrap around a reply and
    nothing else is dropped first: reasoning in `<think>` tags, code-fence lines and bold
    markers; any other line makes the reply unusable (a judge that argues may mean anything)."""
    grades: dict[str, float] = {}
    text = _THINKING.sub("", text).replace("*", "")
    for number, line in enumerate(text.strip().splitlines(), start=1):
        if not line.strip() or _FENCE.fullmatch(line):
            continue
        match = _LINE.match(line)
        if match is None:
            # Not the line itself: a judge's reply can quote the prompt, which stays out of logs.
            raise JudgeError(
                f"line {number} of the judge's reply ({len(line)} characters) is not "
                "'A: <grade>' or 'B: <grade>'"
            )
        label, value = match.group(1).upper(), float(match.group(2))
        if label in grades:
            raise JudgeError(f"the judge graded {label} twice")
        if value > SCALE:
            raise JudgeError(f"grade {value:g} for {label} is above {SCALE:g}")
        grades[label] = value / SCALE
    if set(grades) != {"A", "B"}:
        raise JudgeError("the judge's reply does not grade both A and B")
    return Verdict(a=grades["A"], b=grades["B"])
