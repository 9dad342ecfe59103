"""The `answer`, `choice` and `numeric` checks: extraction, each kind of equivalence, routing."""

from __future__ import annotations

import threading

import pytest

from cotforge.checks import create
from cotforge.checks.answer.extract import final_answer, gold_answer
from cotforge.checks.answer.normalize import numbers_equal, parse_number


def judge(gold: str, completion: str, check: str = "answer", **options) -> tuple[bool, str, dict]:
    sample = {"gold": gold, "completion": completion}
    verdict = create(check, **options).check(sample)
    return verdict.passed, verdict.reason, sample


# extraction

@pytest.mark.parametrize("summary,answer,how", [
    ("so the total is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", "boxed"),
    ("first \\boxed{3}, then \\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}", "boxed"),
    ("The answer is 42.", "42", "anchor"),
    ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}", "anchor"),
    ("**Answer:** 7 apples", "7 apples", "anchor"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", "hashes"),
    ("She makes 9 * 2 = $18.\nA: 18", "18", "a-line"),
    ("<answer>5</answer>", "5", "answer-tag"),
    ("所以，答案是 12。", "12", "anchor"),
    ("因此最终答案为：$\\frac{1}{3}$", "\\frac{1}{3}", "anchor"),
    ("-3.5", "-3.5", "whole"),
])
def test_final_answer_is_found(summary: str, answer: str, how: str) -> None:
    extracted = final_answer(summary)
    assert (extracted.text, extracted.how) == (answer, how)


def test_final_answer_absent_in_long_prose() -> None:
    text = "We consider the problem carefully and in depth.\n" * 5
    assert final_answer(text).text is None


def test_the_last_marker_wins() -> None:
    assert final_answer("The answer is 5? No, let me redo.\nA: 7").text == "7"


@pytest.mark.parametrize("gold,answer", [
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18", "18"),
    ("She makes 9 * 2 = $<<9*2=18>>18.\nA: 18", "18"),
    ("So the answer is $\\boxed{\\frac{14}{3}}$.", "\\frac{14}{3}"),
    ("\\frac{1}{2}", "\\frac{1}{2}"),
])
def test_gold_answer(gold: str, answer: str) -> None:
    assert gold_answer(gold).text == answer


def test_answer_after_think_only() -> None:
    passed, _, sample = judge("18", "<think>maybe \\boxed{17}</think>The answer is 18.")
    assert passed and sample["answer"] == "18"
    passed, reason, _ = judge("18", "<think>the answer is 18 but I keep thinking")
    assert not passed and "no final answer" in reason


# numbers without sympy

@pytest.mark.parametrize("text,value", [
    ("7,425,000", 7425000), ("1 000", 1000), ("1,000.5", 1000.5), ("1000,99", 1000.99), ("0,111", 0.111),
    ("\\$1,000.99", 1000.99), ("12,\\!000", 12000), ("14{,}916", 14916), (".4", 0.4), ("-5", -5),
    ("3.2e5", 320000), ("3.2 \\times 10^{5}", 320000), ("\\frac{10}{9}", 10 / 9), ("-\\dfrac{1}{4}", -0.25),
    ("x = 3", 3), ("90^\\circ", 90), ("125\\text{ miles}", 125), ("26 元", 26), ("1.5 m²", 1.5),
])
def test_parse_number(text: str, value: float) -> None:
    number = parse_number(text)
    assert number is not None and float(number.value) == pytest.approx(value)


@pytest.mark.parametrize("text", ["5x", "2 i", "3 \\pi", "1e999999", "32, 349", "abc", "9" * 500])
def test_parse_number_refuses(text: str) -> None:
    assert parse_number(text) is None


def test_numbers_equal_rules() -> None:
    n = parse_number
    assert numbers_equal(n("1/3"), n("0.333333"))  # a float is compared at 6 places
    assert numbers_equal(n("8/3"), n("2.6667"), rounding=True)  # a decimal states its own precision
    assert not numbers_equal(n("8/3"), n("2.6667"))  # ... which counts only where rounding was asked for
    assert numbers_equal(n("28\\%"), n("28")) and numbers_equal(n("28\\%"), n("0.28"))
    assert not numbers_equal(n("0.28"), n("28"))
    assert not numbers_equal(n("1.234"), n("1.23"))  # a decimal gold keeps its digits
    assert not numbers_equal(n("1/3"), n("0.3"))


# equivalence, end to end through the check

@pytest.mark.parametrize("gold,completion", [
    ("Natalia sold 48 + 24 = <<48+24=72>>72 clips.\n#### 72", "So she sold 72 clips in total.\nA: 72"),
    ("1000", "The answer is 1,000."), ("0.5", "\\boxed{\\frac{1}{2}}"), ("\\frac{3}{4}", "The answer is 75\\%."),
    ("1.5\\times 10^{-3}", "\\boxed{0.0015}"), ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}"), ("\\sqrt[3]{27}", "\\boxed{3}"),
    ("2\\pi", "\\boxed{\\pi \\cdot 2}"), ("\\sin^2 x + \\cos^2 x", "\\boxed{1}"), ("\\ln(e^3)", "\\boxed{3}"),
    ("3", "\\boxed{\\log_2 8}"), ("\\binom{6}{3}", "\\boxed{20}"), ("1+i", "\\boxed{i+1}"),
    ("(x-1)(x+1)", "\\boxed{x^2-1}"), ("[2, 5)", "\\boxed{[2,5)}"), ("(-\\infty, 3]", "\\boxed{(-\\infty,3]}"),
    ("\\{1,2,3\\}", "\\boxed{\\{2,3,1\\}}"), ("(1,2,3)", "\\boxed{(1,2,3)}"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\boxed{\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}}"),
    ("x=3", "\\boxed{3}"), ("3", "\\boxed{x = 3}"), ("\\text{odd}", "The answer is odd."),
    ("45^\\circ", "\\boxed{45}"), ("\\infty", "\\boxed{\\infty}"), ("\\frac{\\sqrt{3}}{3}", "\\boxed{\\frac{1}{\\sqrt{3}}}"),
    ("12", "所以答案是 $12$。"),
    # past math-verify: unicode math, number words, repeating decimals, degrees vs radians, currency
    ("-5", "The answer is −5."), ("\\sqrt{2}", "\\boxed{√2}"), ("\\infty", "The answer is ∞."),
    ("6", "The answer is six."), ("1/3", "\\boxed{0.\\overline{3}}"), ("30^\\circ", "\\boxed{\\frac{\\pi}{6}}"),
    ("\\frac{\\pi}{2}", "The answer is 90°."), ("\\$5.00", "\\boxed{5}"),
])
def test_equivalent(gold: str, completion: str) -> None:
    passed, reason, _ = judge(gold, completion)
    assert passed, reason


@pytest.mark.parametrize("gold,completion", [
    ("#### 18", "A: 17"), ("0.28", "The answer is 28."), ("\\pi", "\\boxed{3.14}"), ("x^2+1", "\\boxed{x^2-1}"),
    ("[2, 5)", "\\boxed{(2,5)}"), ("(1,2)", "\\boxed{(2,1)}"), ("\\infty", "\\boxed{-\\infty}"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\boxed{\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}}"),
    ("12", "最终答案：13"), ("\\{1,2,3\\}", "\\boxed{\\{1,2\\}}"),
    ("45^\\circ", "\\boxed{\\frac{\\pi}{3}}"), ("7", "The answer is six."), ("1/3", "\\boxed{0.\\overline{6}}"),
])
def test_not_equivalent(gold: str, completion: str) -> None:
    passed, reason, _ = judge(gold, completion)
    assert not passed, reason


def test_reason_names_both_sides_and_answer_column() -> None:
    passed, reason, sample = judge("She makes $18.\n#### 18", "The ducks give 17 eggs.\nA: 17")
    assert not passed and reason.startswith("answer 17 != gold 18")
    assert sample["answer"] == "17"


def test_no_gold_and_no_answer() -> None:
    verdict = create("answer").check({"gold": None, "completion": "\\boxed{1}"})
    assert verdict.passed and verdict.score is None and "no gold" in verdict.reason
    passed, reason, _ = judge("5", "I could not work this out at all, sorry, it is beyond me.\n" * 3)
    assert not passed and reason.startswith("no final answer found")


def test_options_map_math_verify_grader_options() -> None:
    assert judge("$\\sqrt{2}$", "$1.4142$")[0] is False  # 6 places by default
    assert judge("$\\sqrt{2}$", "$1.4142$", precision=4)[0] is True
    assert judge("$\\frac{1}{3}$", "$0.3333$", rounding="always")[0] is True  # a rational gold: at the places stated
    assert judge("$\\frac{1}{3}$", "$0.3333$")[0] is False  # the prompt (none here) did not ask for rounding
    assert judge("$f(x)$", "$f(y)$")[0] is False
    assert judge("$f(x)$", "$f(y)$", strict=False)[0] is True


def test_works_off_the_main_thread() -> None:
    results = []
    thread = threading.Thread(target=lambda: results.append(judge("\\frac{\\sqrt{3}}{2}", "\\boxed{\\sin(\\pi/3)}")))
    thread.start()
    thread.join(60)
    assert results and results[0][0], results


def test_answer_type_routing() -> None:
    sample = {"gold": "C", "completion": "The answer is (C).", "answer_type": "choice"}
    assert create("answer").check(sample).passed
    sample = {"gold": "print(1)", "completion": "x", "answer_type": "code"}
    assert create("answer").check(sample).score is None
    sample = {"gold": "Paris", "completion": "The answer is paris.", "answer_type": "text"}
    assert create("answer").check(sample).passed


# choice and numeric

@pytest.mark.parametrize("gold,completion,expected", [
    ("B", "The answer is (B).", True), ("(C)", "Answer: C", True), ("D) 42", "**Answer:** (D)", True),
    ("A", "\\boxed{\\text{(A)}}", True), ("E", "答案是 E", True), ("B", "B", True),
    ("B", "The answer is (C).", False), ("A", "Option A is wrong; the answer is C.", False),
    ("C", "I am not sure which one applies here at all, honestly.", False),
])
def test_choice(gold: str, completion: str, expected: bool) -> None:
    passed, reason, _ = judge(gold, completion, "choice")
    assert passed is expected, reason


@pytest.mark.parametrize("gold,completion,options,expected", [
    ("6.02e23", "The answer is 6.0 \\times 10^{23}.", {}, True),
    ("9.81", "\\boxed{9.8}", {}, True),
    ("9.81", "\\boxed{9.5}", {}, False),
    ("9.81", "\\boxed{9.5}", {"rel_tol": 0.05}, True),
    ("1.047", "\\boxed{\\frac{\\pi}{3}}", {}, True),
    ("0", "\\boxed{0.001}", {"abs_tol": 0.01}, True),
    ("3.5", "The answer is about three and a half.", {}, False),
])
def test_numeric(gold: str, completion: str, options: dict, expected: bool) -> None:
    passed, reason, _ = judge(gold, completion, "numeric", **options)
    assert passed is expected, reason
