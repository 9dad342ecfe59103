"""`numeric`: the final answer is a number within a tolerance of the gold (science, estimates).

`|answer - gold| <= max(rel_tol * |gold|, abs_tol)`, after units, thousands separators and
percent are read (`normalize.parse_number`); an answer that is a LaTeX expression (`\\frac{\\pi}{3}`,
`2\\sqrt{2}`) is evaluated through math-verify's parser under the same size guards as `answer`.
"""

from __future__ import annotations

from fractions import Fraction

from cotforge.checks.answer import symbolic
from cotforge.checks.answer.common import MATH_REQUIRES, summary_of
from cotforge.checks.answer.equivalence import short
from cotforge.checks.answer.extract import final_answer, gold_answer
from cotforge.checks.answer.guards import text_guard
from cotforge.checks.answer.normalize import parse_number
from cotforge.checks.base import UNDECIDED, Check, Verdict, register


def to_number(text: str | None) -> Fraction | float | None:
    """The value of an answer string: plain numbers exactly, expressions through sympy."""
    if not text:
        return None
    number = parse_number(text)
    if number is not None:
        return number.value
    if text_guard(text):
        return None
    exprs, _, _ = symbolic.split(symbolic.parse(f"${text}$", ("latex", "expr")))
    for expr in exprs:
        try:
            value = complex(expr.evalf(30))
        except (TypeError, ValueError, AttributeError, OverflowError):
            continue
        if value.imag == 0:
            return value.real
    return None


@register
class NumericCheck(Check):
    name = "numeric"
    verifies = True
    timeout_s = 5.0
    requires = MATH_REQUIRES  # expressions go through sympy
    rel_tol: float = 0.01  # 1%: the usual grading slack for science answers with rounded constants
    abs_tol: float = 1e-9  # for a gold of 0

    def check(self, sample: dict) -> Verdict:
        gold = sample.get("gold")
        if gold is None or not str(gold).strip():
            return Verdict.skip("no gold", missing="gold")
        gold_text = gold_answer(str(gold)).text
        gold_value = to_number(gold_text)
        if gold_value is None:
            return Verdict.fail(f"gold {short(gold_text)} is not a number")
        answer = final_answer(summary_of(sample)).text
        sample["answer"] = answer
        if answer is None:
            return Verdict.fail("no final answer found", code=UNDECIDED)
        value = to_number(answer)
        if value is None:
            return Verdict.fail(f"answer {short(answer)} is not a number")
        error = abs(float(value) - float(gold_value))
        allowed = max(self.rel_tol * abs(float(gold_value)), self.abs_tol)
        if error <= allowed:
            return Verdict.ok(f"answer {short(answer)} ~ gold {short(gold_text)} (|diff| {error:.3g} <= {allowed:.3g})")
        return Verdict.fail(f"answer {short(answer)} != gold {short(gold_text)} (|diff| {error:.3g} > {allowed:.3g})")
