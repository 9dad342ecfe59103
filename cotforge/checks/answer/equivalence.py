"""Is a completion's final answer the gold answer? Fast path first, sympy only when needed.

1. Extract both answers (`extract`). When both are plain numbers, compare them exactly with
   `Fraction`s (`normalize`): no sympy, microseconds. Identical answers are equal.
2. Otherwise hand both texts to math-verify (`symbolic`), guarded, and when it says no, retry at
   the precision a decimal prediction states (`8/3` vs `2.6667`), which math-verify misses.
3. When math-verify parses nothing on a side, compare normalised strings (`\\text{Even}` = `even`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from cotforge.checks.answer import symbolic
from cotforge.checks.answer.extract import MAX_SCAN_CHARS, Extracted, clean, final_answer, gold_answer
from cotforge.checks.answer.guards import MAX_ANSWER_CHARS, text_guard
from cotforge.checks.answer.normalize import numbers_equal, parse_number, unicode_math

_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed|\\fbox")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal|operatorname)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ|°|\\degree")
_NOISE = re.compile(r"[\s$.{}\\]|\\left|\\right")


@dataclass(frozen=True)
class Options:
    match_types: tuple[str, ...] = symbolic.MATCH_TYPES
    precision: int = 6
    strict: bool = True
    allow_set_relation: bool = False
    max_answer_chars: int = MAX_ANSWER_CHARS


class Outcome(NamedTuple):
    equal: bool | None  # None: nothing to compare (no answer found)
    answer: str | None  # the prediction's final answer as written
    gold: str | None  # the gold answer as extracted
    reason: str


def short(text: str | None, limit: int = 60) -> str:
    if text is None:
        return "none"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _verdict(equal: bool, answer: str | None, gold: str | None, how: str) -> Outcome:
    sign = "=" if equal else "!="
    return Outcome(equal, answer, gold, f"answer {short(answer)} {sign} gold {short(gold)} ({how})")


def _plain(text: str) -> str:
    text = _TEXT_WRAPPER.sub(r"\1", text)
    return _NOISE.sub("", text).lower()


def gold_text(gold: str, extracted: Extracted) -> str:
    """What math-verify should parse for the gold: LaTeX needs `$...$`; a bare gold gets them."""
    if extracted.how in ("hashes", "a-line"):
        return f"${extracted.text}$"
    if _DELIMITED.search(gold):
        return gold
    return f"${gold.strip()}$"


def fast(gold: Extracted, pred: Extracted, options: Options) -> Outcome | None:
    """Decide without sympy when both answers are plain numbers or identical."""
    if not (gold.text and pred.text and gold.strong and pred.strong):
        return None
    gold_number, pred_number = parse_number(gold.text), parse_number(pred.text)
    if gold_number and pred_number:
        return _verdict(numbers_equal(gold_number, pred_number, options.precision), pred.text, gold.text, "number")
    if gold.text.strip() == pred.text.strip():
        return _verdict(True, pred.text, gold.text, "identical")
    return None


def compare(gold: str, summary: str, options: Options = Options(), text_only: bool = False) -> Outcome:
    """Compare the final answer of `summary` with `gold` (bare, LaTeX or a worked solution).

    `text_only`: free-text answers, compared as normalised strings (no number or sympy path).
    """
    gold, summary = unicode_math(gold), unicode_math(summary)
    gold_extracted, pred = gold_answer(gold), final_answer(summary)
    if text_only:
        if pred.text is None:
            return Outcome(None, None, gold_extracted.text, "no final answer found")
        same = _plain(pred.text) == _plain(gold_extracted.text or "")
        return _verdict(same, pred.text, gold_extracted.text, "text")
    decided = fast(gold_extracted, pred, options)
    if decided:
        return decided
    if pred.text is not None:
        problem = text_guard(pred.text, options.max_answer_chars)
        if problem:
            return Outcome(False, pred.text[:options.max_answer_chars], gold_extracted.text, problem)
    return _sympy_path(gold, summary, gold_extracted, pred, options)


def _sympy_path(gold: str, summary: str, gold_extracted: Extracted, pred: Extracted, options: Options) -> Outcome:
    """math-verify on both texts (the whole summary, so its own extraction applies), guarded."""
    summary_text = clean(summary, MAX_SCAN_CHARS)
    if text_guard(summary_text, MAX_SCAN_CHARS):  # a hostile summary: parse only the answer
        summary_text = f"${pred.text}$" if pred.text else ""
    gold_source = clean(gold, MAX_SCAN_CHARS)
    if text_guard(gold_source, MAX_SCAN_CHARS):
        gold_source = gold_extracted.text or ""
    gold_exprs, gold_str, gold_problem = symbolic.split(
        list(symbolic.parse_gold(gold_text(gold_source, gold_extracted), options.match_types)))
    pred_parsed = symbolic.parse(summary_text, options.match_types) if summary_text else []
    if not pred_parsed and pred.text:
        pred_parsed = symbolic.parse(f"${pred.text}$", options.match_types)
    pred_exprs, pred_str, pred_problem = symbolic.split(pred_parsed)
    answer = pred.text or pred_str
    gold_shown = gold_extracted.text or gold_str

    if not pred_exprs:
        if pred_problem:
            return Outcome(False, answer, gold_shown, f"answer not verifiable: {pred_problem}")
        if answer is None:
            return Outcome(None, None, gold_shown, "no final answer found")
    if not gold_exprs or not pred_exprs:
        if gold_problem:
            return Outcome(False, answer, gold_shown, f"gold not verifiable: {gold_problem}")
        same = bool(answer and gold_shown and _plain(answer) == _plain(gold_shown))
        return _verdict(same, answer, gold_shown, "text")

    equal = symbolic.verify(gold_exprs, pred_exprs, options.precision, options.strict,
                            options.allow_set_relation)
    if not equal:
        equal = _at_stated_precision(gold_exprs, pred_exprs, gold_str, pred_str, options)
    if not equal and gold_extracted.text and pred.text:
        equal = _same_angle(gold_extracted.text, pred.text, options)
    return _verdict(equal, answer, gold_shown, "sympy")


def _same_angle(gold: str, pred: str, options: Options) -> bool:
    """`30^\\circ` = `\\frac{\\pi}{6}`, either way round (math-verify drops the degree sign)."""
    for degrees, radians in ((gold, pred), (pred, gold)):
        number = parse_number(degrees) if _DEGREES.search(degrees) and "\\pi" in radians else None
        if number is None:
            continue
        value = number.value / 180
        converted = symbolic.parse(f"${value.numerator}\\pi/{value.denominator}$")
        other, _, _ = symbolic.split(symbolic.parse(f"${radians}$", options.match_types))
        if converted and other and symbolic.verify(converted[:1], other, options.precision):
            return True
    return False


def _at_stated_precision(gold_exprs: list, pred_exprs: list, gold_str: str | None,
                         pred_str: str | None, options: Options) -> bool:
    """`2.6667` is right for `8/3`: a decimal answer is compared at the places it states (>= 2),
    when the gold is made of rational numbers."""
    places = symbolic.stated_decimals(pred_str)
    if places is None or places < 2 or places >= options.precision or symbolic.stated_decimals(gold_str):
        return False
    if not all(symbolic.rational_valued(expr) for expr in gold_exprs if not isinstance(expr, str)):
        return False  # 3.14 is not an answer for pi, nor 1.41 for sqrt(2): those want the exact form
    return symbolic.verify(gold_exprs, pred_exprs, places, options.strict, options.allow_set_relation)
