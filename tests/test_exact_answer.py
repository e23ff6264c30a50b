"""`align.rewards:exact_answer` on hand-written replies, and `rewards.call` handing answers to the
reward functions that ask for them (and refusing when the prompts have none)."""

from __future__ import annotations

import pytest

from align import rewards
from align.rewards import exact_answer, final_answer, same_answer
from align.util.errors import RecipeError


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("Answer: 42", "42"),
        ("The answer is 42.", "42"),
        ("The final answer is: **42** apples.", "42"),
        ("We add them. \\boxed{42}", "42"),
        ("**42**", "42"),
        ("42.0", "42"),
        ("In all, 1,000 marbles.", "1000"),
        ("1000", "1,000"),
        ("5 - 8 = -3", "-3"),
        ("Answer: −3", "-3"),  # a Unicode minus
        ("7 + 5 = 12, so Tom has 12 apples now. Great job!", "12"),  # trailing text: the last number
        ("Answer: 6 + 9 = 15\nEva has 15 cards now.", "15"),  # the result after "=", not the first term
        ("Answer: 7. Because 3 + 4 is 7 and 10 is more.", "7"),  # the marker wins over the last number
        ("There are 4 boxes of 2. \\boxed{8} Answer: 4", "8"),  # a boxed answer wins over the marker
        ("answer: Paris.", "paris"),  # not numbers: normalised text
    ],
)
def test_right_answers_in_the_usual_formats_score_one(response: str, answer: str) -> None:
    assert exact_answer(["q"], [response], [answer]) == [1.0]


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("Answer: 41", "42"),
        ("The answer is 24.", "42"),
        ("14 + 52 = 60", "66"),  # wrong, though the question's numbers appear
        ("Answer: 98", "8"),
        ("5-3 = 2", "-3"),  # a hyphen between numbers is not a minus sign
        ("3", "-3"),
        ("I don't know.", "42"),  # no number at all
        ("", "42"),
        ("Answer: 7", "seven"),
    ],
)
def test_wrong_or_missing_answers_score_zero(response: str, answer: str) -> None:
    assert exact_answer(["q"], [response], [answer]) == [0.0]


def test_final_answer_and_comparison_rules() -> None:
    assert final_answer("no digits here") is None
    assert final_answer("Tom has 7 apples and buys 5 more, so 12") == "12"
    assert final_answer("Answer: **yes**") == "yes"
    assert same_answer("1,000.0", "1000") and not same_answer(None, "0")
    assert not same_answer("12", "12.5")


def test_a_record_without_an_answer_is_an_error() -> None:
    with pytest.raises(RecipeError, match=r"response 1 has no answer.*1 of 2 without.*`answer` column"):
        exact_answer(["a", "b"], ["1", "2"], ["1", None])


def test_exact_answer_is_built_in() -> None:
    assert rewards.resolve("align.rewards:exact_answer") is exact_answer


def test_call_passes_answers_to_functions_that_ask_for_them() -> None:
    seen = {}

    def with_answers(prompts, responses, answers):
        seen["answers"] = answers
        return [1.0] * len(responses)

    def with_ids_and_answers(prompts, responses, response_ids, answers):
        seen["both"] = (response_ids, answers)
        return [0.0] * len(responses)

    assert rewards.call(with_answers, ["p"], ["r"], [[5]], answers=["3"]) == [1.0]
    assert seen["answers"] == ["3"]
    rewards.call(with_ids_and_answers, ["p"], ["r"], [[5]], ["3"])
    assert seen["both"] == ([[5]], ["3"])
    assert rewards.call(exact_answer, ["p", "p"], ["Answer: 3", "4"], [[1], [2]], ["3", "3"]) == [1.0, 0.0]
    assert rewards.call(rewards.brevity, ["p"], ["short"], [[1]], answers=["3"]) == [
        1.0
    ]  # not asked: not passed


@pytest.mark.parametrize("answers", [None, ["3", None]])
def test_call_refuses_an_answer_reward_without_answers(answers) -> None:
    missing = "2 of 2" if answers is None else "1 of 2"
    with pytest.raises(RecipeError, match=rf"exact_answer checks answers, but {missing} prompts have none"):
        rewards.call(exact_answer, ["p", "p"], ["1", "2"], [[1], [2]], answers)
