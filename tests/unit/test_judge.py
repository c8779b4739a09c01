"""The judge's prompt and verdict parsing, and the simulated provider playing judge."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_service.chat import ChatMessage
from router_service.providers.simulated_judge import simulated_verdict
from router_service.shadow.judge import (
    JUDGE_INSTRUCTIONS,
    JudgeError,
    format_verdict,
    judge_request,
    parse_verdict,
    served_is_a,
)

grades = st.integers(0, 10).map(lambda g: g / 10)


@given(grades, grades)
def test_a_well_formed_verdict_parses_back(a: float, b: float) -> None:
    verdict = parse_verdict(format_verdict(a, b))
    assert (verdict.a, verdict.b) == (pytest.approx(a), pytest.approx(b))


@pytest.mark.parametrize(
    ("text", "a", "b"),
    [
        ("A: 7\nB: 4", 0.7, 0.4),
        ("  a = 10/10 \n\n b: 0 / 10\n", 1.0, 0.0),
        ("**A:** 8.5\n**B:** 6", 0.85, 0.6),
        ("B: 3\nA: 9", 0.9, 0.3),
        ("<think>\nA is right, B: wrong.\n</think>\nA: 9\nB: 2", 0.9, 0.2),
        ("```\nA: 6\nB: 5\n```", 0.6, 0.5),
        ("```text\nA: 6\nB: 5\n```\n", 0.6, 0.5),
    ],
)
def test_judge_replies_in_the_required_form(text: str, a: float, b: float) -> None:
    verdict = parse_verdict(text)
    assert (verdict.a, verdict.b) == (pytest.approx(a), pytest.approx(b))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "A: 7",
        "A: 7\nB: 4\nA: 5",
        "A: 11\nB: 4",
        "A: -1\nB: 4",
        "Both answers are fine.\nA: 7\nB: 7",
        "A: seven\nB: 4",
        "C: 3\nA: 1\nB: 2",
        "A: 7\nB: 4\nA is better.",
        "<think>A: 9</think>",
    ],
)
def test_anything_else_is_a_judge_error(text: str) -> None:
    with pytest.raises(JudgeError):
        parse_verdict(text)


@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_judge_error(text: str) -> None:
    try:
        verdict = parse_verdict(text)
    except JudgeError:
        return
    assert 0 <= verdict.a <= 1 and 0 <= verdict.b <= 1


def test_the_order_of_answers_is_stable_and_balanced() -> None:
    ids = [f"req-{i}" for i in range(2000)]
    assert [served_is_a(i) for i in ids] == [served_is_a(i) for i in ids]
    assert 900 < sum(served_is_a(i) for i in ids) < 1100


def conversation(text: str) -> tuple[ChatMessage, ...]:
    return (ChatMessage("system", "Be brief."), ChatMessage("user", text))


def test_the_judge_prompt_carries_both_answers_and_no_model_names() -> None:
    request = judge_request(
        "r.judge", conversation("What is 2+2?"), "Four.", "It is 4.", judge_model="gpt-5.5"
    )
    system, user = request.messages
    assert system.content == JUDGE_INSTRUCTIONS
    assert "What is 2+2?" in user.content and "Be brief." not in user.content
    assert user.content.index("Four.") < user.content.index("It is 4.")
    assert "gpt-5.5" not in user.content
    assert request.hints.force_model == "gpt-5.5" and request.temperature == 0


def test_the_simulated_judge_answers_only_judge_requests() -> None:
    assert simulated_verdict(conversation("hello")) is None


def test_the_simulated_judge_is_deterministic_parseable_and_tells_answers_apart() -> None:
    verdicts = []
    for i in range(50):
        request = judge_request(
            f"r{i}",
            conversation(f"Question {i}?"),
            f"Answer one {i}",
            f"Other {i}",
            judge_model="m",
        )
        text = simulated_verdict(request.messages)
        assert text is not None
        assert simulated_verdict(request.messages) == text
        verdicts.append(parse_verdict(text))
    assert any(v.a != v.b for v in verdicts)


def test_the_simulated_judge_grades_harder_conversations_lower() -> None:
    def mean_grade(question: str) -> float:
        total = 0.0
        for i in range(40):
            request = judge_request(
                "r", conversation(f"{question} #{i}"), f"answer {i}", f"reply {i}", judge_model="m"
            )
            text = simulated_verdict(request.messages)
            assert text is not None
            verdict = parse_verdict(text)
            total += verdict.a + verdict.b
        return total / 80

    easy = mean_grade("Say hi.")
    hard = mean_grade(
        "Prove the algorithm's complexity, then debug this race: ```x = {a; b = c;}``` " * 20
    )
    assert hard < easy
