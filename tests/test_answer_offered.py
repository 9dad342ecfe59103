"""Issue 21, answer grading: what a final answer offers is what gets graded.

Classes (each with cases of our own and, where they exist, other graders' test cases, cited):
more than one value offered; a restated calculation; self-correction between boxes; whole
expressions; other languages' final-answer phrases; golds in words (n/a for a judge). The reward
functions follow the same verdicts. tests/data/answers/holdout*.jsonl are kept apart from these
(benchmarks/answer_holdout.py scores them); nothing here is copied from them.
"""

from __future__ import annotations

import re

import pytest
from servers import ScriptedServer, chat_answer

from cotforge.train import rewards
from cotforge.checks import create
from cotforge.checks.answer.offered import alternatives, is_text_gold, math_part
from cotforge.checks.base import NOT_MATH
from cotforge.checks.chain import Chain, CheckSpec, VerificationGate
from cotforge.judge import JudgedChain

THINK = "<think>\nReasoning here.\n</think>\n\n"


def grade(gold: str, completion: str, **options):
    return create("answer", **options).check({"gold": gold, "completion": completion})


# 1. More than one value offered: only a gold that is itself a set may match, compared as a set.

@pytest.mark.parametrize("gold,summary", [
    ("7", "The result is 7 or 8."),  # issue 21's examples
    ("4", "x = 4 or x = -4"),
    ("30", "It is 30, unless we count the end posts, then 32."),
    ("7", "The answer is 7 or 8."),
    ("8", "The answer is 7 or 8."),  # neither value is committed to
    ("14", "Either 14 or 15 chairs are needed."),
    ("2", "$x = 2$ or $x = -2$"),
    ("3", "\\boxed{3 \\text{ or } 4}"),
    ("10", "Il en reste 10 ou 11."),
    ("10", "Es bleiben 10 oder 11 übrig."),
    ("6", "答案是 6 或者 7。"),
    ("25", "We get 25 if the ends are excluded, otherwise 27."),
    ("-1", "The roots are -1 and 4."),
])
def test_two_values_offered_are_rejected(gold: str, summary: str) -> None:
    verdict = grade(gold, THINK + summary)
    assert verdict.status == "failed" and "more than one value" in verdict.reason, verdict


@pytest.mark.parametrize("gold,summary", [
    ("4, -4", "x = 4 or x = -4"),
    ("\\pm 4", "x = 4 or x = -4"),
    ("\\{-1, 4\\}", "The roots are -1 and 4."),
    ("1, 2", "$x = 1$ or $x = 2$"),
])
def test_a_set_gold_matches_the_values_as_a_set(gold: str, summary: str) -> None:
    verdict = grade(gold, THINK + summary)
    assert verdict.passed and verdict.score == 1.0, verdict


@pytest.mark.parametrize("gold,summary", [
    ("0.5", "The probability is 1/2, or 50%."),  # one value said twice
    ("3", "The answer is 3 (or, written out, three)."),
    ("12", "The answer is 12."),
    ("1000", "The answer is 1,000."),  # a thousands separator is not a list
])
def test_one_value_said_twice_is_one_answer(gold: str, summary: str) -> None:
    verdict = grade(gold, THINK + summary)
    assert verdict.passed, verdict


def test_alternatives_reads_the_values_offered() -> None:
    assert alternatives("x = 4 or x = -4") == ["4", "-4"]
    assert alternatives("30, unless we count the end posts, then 32") == ["30", "32"]
    assert alternatives("5 or more") is None  # a hedge, rejected as such
    assert alternatives("1/2, or 50%") is None


# 2. A restated calculation without a reasoning block: the value given is graded, not the left side.

@pytest.mark.parametrize("gold,completion,passed", [
    ("53", "60 - 7 = 52", False),  # issue 21's example: 60 - 7 is 53, but 52 is what was given
    ("52", "60 - 7 = 52", True),
    ("53", "60 - 7 = 52, so she has 52 apples left.", False),
    ("20", "3 × 6 + 2 = 18", False),
    ("18", "3 × 6 + 2 = 18", True),
    ("105", "Total: $35 + 70 = 105$", True),
    ("110", "Total: $35 + 70 = 105$", False),
    ("35", "Total: $35 + 70 = 105$", False),
    ("12", "The answer is $\\frac{24}{2} = 12$.", True),
    ("13", "The answer is $\\frac{24}{2} = 13$.", True),  # the value given is 13
    ("24", "So 6 × 4 = 24 cookies.", True),
])
def test_a_calculation_is_graded_by_the_value_given(gold: str, completion: str, passed: bool) -> None:
    verdict = grade(gold, completion)
    assert verdict.passed is passed, verdict


def test_an_equation_with_an_unknown_stays_whole() -> None:
    assert grade("y = 2x + 3", THINK + "The answer is y = 2x + 3.").passed


# 3. Self-correction between two boxed answers: the last committed answer counts.

@pytest.mark.parametrize("gold,summary,passed", [
    ("12", "My first try gives \\boxed{11}; that drops a carry, so the final answer is \\boxed{12}.", True),  # issue 21
    ("11", "My first try gives \\boxed{11}; that drops a carry, so the final answer is \\boxed{12}.", False),
    ("40", "Initially I wrote $\\boxed{36}$, but I forgot the corner posts. The answer is $\\boxed{40}$.", True),
    ("36", "Initially I wrote $\\boxed{36}$, but I forgot the corner posts. The answer is $\\boxed{40}$.", False),
    ("5", "\\boxed{4}. Wait, that is wrong: \\boxed{5}.", True),
    ("9", "The naive count is \\boxed{10}; removing the repeat gives the corrected count \\boxed{9}.", True),
])
def test_the_last_committed_box_counts(gold: str, summary: str, passed: bool) -> None:
    verdict = grade(gold, THINK + summary)
    assert verdict.passed is passed, verdict


def test_boxes_without_a_retraction_are_read_together() -> None:
    assert grade("3, 5", THINK + "So $x = \\boxed{3}$ and $y = \\boxed{5}$.").passed


# 4. Whole expressions, equations, intervals, matrices: graded whole, as math-verify parses them.

@pytest.mark.parametrize("gold,summary,passed", [
    ("(x+2)^2", "The answer is x^2 + 4x + 4", True),  # issue 21: was graded as the number 4
    ("4", "The answer is x^2 + 4x + 4", False),
    ("(x-3)(x+3)", "The answer is x^2 - 9.", True),
    ("9", "The answer is x^2 - 9.", False),
    ("y = -2x + 1", "The line is $y = -2x + 1$.", True),
    ("y = -2x + 1", "The line is $y = 2x + 1$.", False),
    ("[-1, 4)", "The answer is [-1, 4).", True),
    ("[-1, 4)", "The answer is [-1, 4].", False),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
     "The answer is \\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}.", True),
    ("4", "The answer is \\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}.", False),  # not one entry of it
    ("3x^2", "The derivative is $3x^2$.", True),
    ("2", "The derivative is $3x^2$.", False),
])
def test_whole_expressions_are_graded_whole(gold: str, summary: str, passed: bool) -> None:
    verdict = grade(gold, THINK + summary)
    assert verdict.passed is passed, verdict


# NeMo-Skills tests/test_math_equal.py::test_correct_examples and ::test_incorrect_examples (their
# `math_equal(gold, pred)` both ways round), as gold and the prediction's final answer.
NEMO_EQUAL = [("1/2", "0.5"), ("\\frac{1}{2}", "0.5"), ("x^2+2x+1", "x^2 + 2*x + 1"), ("x^2+2x+1", "x^2 + 2*x - (-1)"),
              ("odd", "\\text{odd}"), (".185", "0.185"), ("\\frac {1}{2}", "0.5"), ("17\\text{ any text}", "17"),
              ("10%", "10"), ("\\frac{1}{3}", "\\dfrac{1}{3}"), ("(r+5)(r+5)", "(r+5)^2"),
              ("\\begin{pmatrix}0&0&0\\\\0&1&0\\\\0&0&1\\end{pmatrix}",
               "\\begin{bmatrix} 0 & 0 & 0 \\\\ 0 & 1 & 0 \\\\ 0 & 0 & 1 \\end{bmatrix}")]
NEMO_UNEQUAL = [("5", "5.001"), ("x^2+2x+1", "x^3+2x+1"), ("\\sqrt{67},-\\sqrt{85}", "\\sqrt{67}")]


@pytest.mark.parametrize("first,second", NEMO_EQUAL)
def test_nemo_skills_math_equal_cases(first: str, second: str) -> None:
    for gold, pred in ((first, second), (second, first)):
        verdict = grade(gold, THINK + f"The answer is ${pred}$.")
        assert verdict.passed, (gold, pred, verdict)


@pytest.mark.parametrize("first,second", NEMO_UNEQUAL)
def test_nemo_skills_math_unequal_cases(first: str, second: str) -> None:
    for gold, pred in ((first, second), (second, first)):
        verdict = grade(gold, THINK + f"The answer is ${pred}$.")
        assert not verdict.passed, (gold, pred, verdict)
# Where cotforge differs from NeMo-Skills: its `("odd", "\\text{oddd}")` is False there; here a gold in
# words that the answer does not say is n/a (a judge decides), and rejected as unverified without one.


# 5. Other languages' final-answer phrases come first; the expression they introduce is graded.

@pytest.mark.parametrize("gold,summary,passed", [
    ("17/30", "所以答案是 17/30。", True),  # issue 21's examples
    ("315", "La réponse est donc 315.", True),
    ("315", "On trouve 3 × 100 = 300, et la réponse est donc 315.", True),
    ("300", "On trouve 3 × 100 = 300, et la réponse est donc 315.", False),
    ("24", "Die Antwort ist also 24, nicht 4 · 5 = 20.", True),
    ("20", "Die Antwort ist also 24, nicht 4 · 5 = 20.", False),
    ("8", "Por lo tanto, la respuesta es 8 y no 2 + 2 = 4.", True),
    ("5", "Quindi la risposta è 5.", True),
    ("5", "Portanto, a resposta é 5.", True),
    ("5", "Het antwoord is 5.", True),
    ("11", "Ответ: 11, так как 5 + 6 = 11.", True),
    ("3/7", "答えは 3/7 です。", True),
    ("49", "정답은 49입니다.", True),
    ("12", "الإجابة هي 12", True),
    ("2/5", "答案：每份是 $\\frac{2}{5}$ 吨。", True),
])
def test_other_languages_final_answer_phrases(gold: str, summary: str, passed: bool) -> None:
    verdict = grade(gold, THINK + summary)
    assert verdict.passed is passed, verdict


# lighteval tests/unit/metrics/test_extractive_match.py::test_multilingual_extraction_math (expected 1).
LIGHTEVAL_MULTILINGUAL = [
    ("13", "首先，我们知道最初有3只鸟和4只鹳鸟坐在篱笆上，所以总共有3 + 4 = 7只鸟和鹳鸟。 然后，又有6只鹳鸟来加入它们，所以鹳鸟的总数变成4 + 6 = 10只。 "
           "因此，现在篱笆上总共有3只鸟（假设鸟的数量没有变化）和10只鹳鸟，所以一共有3 + 10 = 13只鸟和鹳鸟。"),
    ("79", "donc 353 g - 79 g = 274 g. Donc, il a déjà 79 g de cire."),
    ("13/28", "计划的比例为13/28"),
    ("8/46", "\\frac{4}{23}"),
]


@pytest.mark.parametrize("gold,completion", LIGHTEVAL_MULTILINGUAL)
def test_lighteval_multilingual_cases(gold: str, completion: str) -> None:
    verdict = grade(gold, completion)
    assert verdict.passed, verdict


def test_math_part_skips_prose_around_the_answer() -> None:
    assert math_part("12, ya que 3 × 5 = 15 no cumple") == "12"
    assert math_part("每份应该是 (\\frac{2}{5}) 吨") == "(\\frac{2}{5})"
    assert math_part("8 y no 2 + 2 = 4") == "8"  # Spanish "y": a conjunction, not a variable
    assert math_part(".185 metres") == ".185"
    assert math_part("7 (not 8, which double counts)") == "7"
    assert math_part("x^2 + 4x + 4") == "x^2 + 4x + 4"
    assert math_part("\\begin{bmatrix} 1 & 0 \\end{bmatrix} here") == "\\begin{bmatrix} 1 & 0 \\end{bmatrix}"


# 6. Golds in words are not math: `answer` is n/a (not_math), the judge decides; without one, unverified.

@pytest.mark.parametrize("gold", ["Paris", "George Washington", "\\text{odd}", "photosynthesis", "yes"])
def test_text_golds_are_recognised(gold: str) -> None:
    assert is_text_gold(gold)


@pytest.mark.parametrize("gold", ["12", "x^2 + 1", "\\frac{1}{2}", "(C)", "B", "\\pi", "y = 2x", "5 \\text{ cm}",
                                  "\\infty", "\\sin x", "six"])
def test_math_golds_are_not_text(gold: str) -> None:
    assert not is_text_gold(gold)


def test_a_text_gold_is_left_undecided_with_its_reason() -> None:
    verdict = grade("Paris", THINK + "It is Paris, on the Seine.")  # issue 21's example
    assert verdict.status == "n/a" and verdict.code == NOT_MATH, verdict
    assert "not a mathematical answer" in verdict.reason
    assert grade("Paris", THINK + "Paris.").passed  # saying exactly the gold is verifiable
    assert grade("\\text{Even}", THINK + "The answer is even.").passed
    assert grade("Paris", THINK + "Lyon").status == "n/a"  # other words: for a judge to read


def test_without_a_judge_a_text_gold_is_unverified_and_rejected() -> None:
    samples = [{"gold": "Paris", "completion": THINK + "It is Paris, on the Seine."},
               {"gold": "12", "completion": THINK + "The answer is 12."}]
    with Chain([CheckSpec("answer", {})], jobs=0) as chain:
        results = chain.run(samples)
    gated = VerificationGate(chain.verifying, allow_unverified=False).apply(results)
    words, number = (result.verdicts[-1] for result in gated)
    assert not words.passed and words.code == NOT_MATH and "judge" in words.reason, words
    assert number.passed


def judge_yes_when_reference_named(body: dict) -> tuple:
    """A stand-in judge server (a real model cannot run in the fast suite): Yes when the reference
    answer's words appear in the model's answer."""
    text = body["messages"][-1]["content"]
    reference = re.search(r"Reference answer:\n(.*?)\n\n", text, re.DOTALL).group(1)
    prediction = re.search(r"Model's answer:\n(.*?)\n\nDoes", text, re.DOTALL).group(1)
    said = "Yes" if reference.lower() in prediction.lower() else "No"
    return 200, {}, {**chat_answer(), "choices": [{"index": 0, "message": {"role": "assistant",
                                                                             "content": f"Judgement: {said}"},
                                                   "finish_reason": "stop"}]}


def test_with_a_judge_the_judge_decides_text_golds(tmp_path) -> None:
    # the sample dicts the filter builds (summary split from the completion)
    samples = rewards.reward_samples(["Capital of France?", "Capital of Italy?", "2+3?"],
                                     [THINK + "It is Paris, on the Seine.", THINK + "It is Milan.",
                                      THINK + "The answer is 5."], gold=["Paris", "Rome", "5"])
    with ScriptedServer([judge_yes_when_reference_named]) as server:
        specs = [CheckSpec("answer", {}), CheckSpec("judge", {
            "engine": "openai", "model": "judge-m", "cache": False,
            "engine_options": {"base_url": server.base_url}})]
        with JudgedChain(specs, jobs=0, allow_unverified=False) as chain:
            results = chain.run(samples)
        assert len(server.received) == 2  # the two text golds; the number was decided by the rule
    paris, rome, five = results
    assert paris.accepted and paris.verdicts[0].code == NOT_MATH and paris.verdicts[1].passed
    assert not rome.accepted and not rome.verdicts[1].passed
    assert five.accepted and five.verdicts[0].passed


# rewards.* follow the same verdicts (the reward is the check's score; None where it does not apply).

def test_accuracy_reward_follows_the_answer_verdicts() -> None:
    completions = [
        [{"role": "assistant", "content": "\\boxed{\\frac{63}{400}}"}],  # open-r1 tests/test_rewards.py
        [{"role": "assistant", "content": "\\boxed{\\frac{64}{400}}"}],  # open-r1 tests/test_rewards.py
        [{"role": "assistant", "content": THINK + "The result is 7 or 8."}],
        [{"role": "assistant", "content": THINK + "My first try gives \\boxed{11}; that drops a carry, "
                                                  "so the final answer is \\boxed{12}."}],
        [{"role": "assistant", "content": THINK + "The answer is x^2 + 4x + 4"}],
        [{"role": "assistant", "content": THINK + "La réponse est donc 315."}],
        [{"role": "assistant", "content": THINK + "It is Paris, on the Seine."}],
    ]
    gold = ["\\frac{63}{400}", "\\frac{63}{400}", "7", "12", "(x+2)^2", "315", "Paris"]
    scores = rewards.accuracy(prompts=[[{"role": "user", "content": "q"}]] * len(gold), completions=completions,
                              gold=gold)
    assert scores == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, None]
    verdicts = rewards.accuracy.verdicts(completions=completions, gold=gold)
    assert verdicts[-1].code == NOT_MATH


def test_a_filter_without_a_judge_counts_text_golds_apart(tmp_path) -> None:
    """The run's summary names why: a gold in words needs a judge (not 'no gold')."""
    import json

    from cotforge.filtering import filter_samples
    from cotforge.stats import format_unverified, run_counts

    rows = [{"id": "words", "prompt": "Capital of France?", "gold": "Paris",
             "completion": THINK + "It is Paris, on the Seine."},
            {"id": "number", "prompt": "2+3?", "gold": "5", "completion": THINK + "The answer is 5."}]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    filter_samples([data], tmp_path / "run", checks=["format", "answer"], jobs=0)
    counts = run_counts(tmp_path / "run", ["format", "answer", "verified"])
    assert counts["accepted"] == 1 and counts["rejected"] == 1
    assert counts["unverified"] == [{"missing": NOT_MATH, "rejected": 1, "allowed": 0}]
    assert "1 with a gold in words, not math" in format_unverified(counts)
