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
from cotforge.checks.answer.offered import alternatives, is_text_gold, math_part, prose_words, set_like

_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed|\\fbox")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal|operatorname)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ|°|\\degree")
_NOISE = re.compile(r"[\s$.{}\\]|\\left|\\right")


# A hedge next to a number: "5 or more", "at least 5", "about 5", "5+" is not the answer 5.
_NUMBER = r"\$?\s*[-+]?\s*\d"
_HEDGE = re.compile(
    r"\b(?:at\s+(?:least|most)|(?:more|less|fewer|greater|higher|lower)\s+than|up\s+to|no\s+(?:more|less)\s+than|"
    rf"roughly|approximately|about|around|nearly|almost|maybe|perhaps|probably|possibly|over|under)\s*{_NUMBER}"
    r"|\d[\d.,]*\s*(?:\\text\s*\{\s*)?or\s+(?:more|less|fewer|greater|higher|lower|above|below|so)\b"
    r"|\d\s*\+\s*[.)]?\s*$",
    re.IGNORECASE)
# An answer written as a calculation ("100 - 1 = 100"): its last side is the answer.
_EQUALS = re.compile(r"(?<![<>!=\\])=(?!=)")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_ARITHMETIC_TAIL = re.compile(r"[\d\s.,+\-*/×÷()\[\]{}^]*$")


@dataclass(frozen=True)
class Options:
    match_types: tuple[str, ...] = symbolic.MATCH_TYPES
    precision: int = 6
    strict: bool = True
    allow_set_relation: bool = False
    max_answer_chars: int = MAX_ANSWER_CHARS
    rounding: bool = False  # the prompt asks for a rounded / decimal answer: 2.6667 may stand for 8/3


class Outcome(NamedTuple):
    equal: bool | None  # None: nothing to compare (no answer found)
    answer: str | None  # the prediction's final answer as written
    gold: str | None  # the gold answer as extracted
    reason: str
    not_math: bool = False  # undecided because the gold is words, not mathematics (a judge may decide)


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


def hedged(answer: str | None) -> bool:
    """"5 or more", "at least 5", "about 5": a bound or a guess, not a final answer."""
    return bool(answer and _HEDGE.search(answer))


def last_side(pred: Extracted) -> Extracted:
    """"100 - 1 = 100" answers 100, and "She gave away 8, so 60 - 8 = 52 apples are left." answers 52:
    a calculation between numbers is graded by the value it gives (its last side), never by the
    expression before it. Equations with unknowns (`y = 2x + 3`) stay whole."""
    if not pred.text:
        return pred
    sides = _EQUALS.split(pred.text.strip().strip("$"))
    if len(sides) < 2 or parse_number(sides[-1]) is None:
        return pred
    # the side before the value ends in numbers and operators (LaTeX commands such as \frac, \times allowed)
    before = _LATEX_COMMAND.sub(" ", sides[-2])
    tail = _ARITHMETIC_TAIL.search(before)
    expression = tail.group(0).strip() if tail else ""
    if not expression or not (expression[0].isdigit() or expression[0] in "(-["):  # `x^2 = 4`, `2x + 3 = 9`
        return pred
    if not any(char.isdigit() for char in expression):
        return pred
    return Extracted(math_part(sides[-1]) or sides[-1].strip(), pred.how, pred.strong)


def _latex(extracted: Extracted) -> bool:
    """Was the answer written as LaTeX math (a box, $...$)? There a bare comma separates items."""
    return extracted.how in ("boxed", "boxed-last") or bool(extracted.text and _DELIMITED.search(extracted.text))


def fast(gold: Extracted, pred: Extracted, options: Options) -> Outcome | None:
    """Decide without sympy when both answers are plain numbers or identical."""
    if not (gold.text and pred.text and gold.strong and pred.strong):
        return None
    gold_number = parse_number(gold.text, decimal_comma=not _latex(gold))
    pred_number = parse_number(pred.text, decimal_comma=not _latex(pred))
    if gold_number and pred_number:
        equal = numbers_equal(gold_number, pred_number, options.precision, options.rounding)
        return _verdict(equal, pred.text, gold.text, "number")
    if gold.text.strip() == pred.text.strip():
        return _verdict(True, pred.text, gold.text, "identical")
    return None


# Answers found after an explicit marker, graded by what they say alone (not by the whole summary).
_MARKED = ("anchor", "answer-tag", "hashes", "a-line", "offered", "copula")
_LAST_SENTENCE = re.compile(r"[^.。!?！？\n]*\d[^.。!?！？\n]*(?:[.。!?！？]\s*)?$")


# "The product is $x^2 - 1$.", "La somme est 12": in a one-sentence summary without a final-answer
# phrase, what follows the last verb of being is the answer.
_COPULA = re.compile(r"\b(?:is|are|equals|was|were|becomes|est|ist|es|è|é|равно|равен)\b|是|为|為")


def after_copula(text: str) -> str | None:
    """The math right after the last "is" of `text` ("The volume of $ABCD$ is 120" -> 120), or None."""
    for copula in reversed(list(_COPULA.finditer(text))):
        after = text[copula.end():]
        part = math_part(after)
        if part and not prose_words(after[:after.find(part[:1])]):  # the math follows the verb directly
            return part
    return None


def offered(raw: Extracted) -> Extracted:
    """The answer as graded: after a final-answer phrase, its first stretch of mathematics (or, where
    the phrase introduces a sentence, "Final Answer: The largest $n$ is 34.", what follows its "is");
    then a calculation's value (`last_side`); in a short summary without a phrase, what follows its
    last "is" (`The derivative is 3x + 2.` answers `3x + 2`, not 2)."""
    if raw.text and raw.how in ("anchor", "answer-tag"):
        words = prose_words(raw.text)
        sentence = words and not raw.text[:words[0].start()].strip(" *")
        part = (sentence and after_copula(raw.text)) or math_part(raw.text)
        if part:
            raw = Extracted(part, raw.how, raw.strong)
    valued = last_side(raw)
    if valued is not raw or raw.how != "whole" or not raw.text:
        return valued
    part = after_copula(raw.text)
    return Extracted(part, "copula", True) if part else raw


def _offered_values(summary: str, raw: Extracted) -> list[str] | None:
    """Two or more different values offered as the answer, or None."""
    if raw.text:
        return alternatives(raw.text)
    tail = _LAST_SENTENCE.search(clean(summary)[-400:].rstrip())
    return alternatives(tail.group(0)) if tail else None


def compare(gold: str, summary: str, options: Options = Options(), text_only: bool = False) -> Outcome:
    """Compare the final answer of `summary` with `gold` (bare, LaTeX or a worked solution).

    `text_only`: free-text answers (as for any gold made of words, `offered.is_text_gold`): equal
    normalised strings pass; anything else is undecided (`equal` None, `not_math`), for a judge.
    """
    gold, summary = unicode_math(gold), unicode_math(summary)
    gold_extracted, raw = gold_answer(gold), final_answer(summary)
    pred = offered(raw)
    if (hedged(pred.text) or hedged(raw.text)) and not hedged(gold_extracted.text):
        return Outcome(False, raw.text, gold_extracted.text,
                       f"answer {short(raw.text)} is hedged, not one final answer (gold {short(gold_extracted.text)})")
    if text_only or is_text_gold(gold_extracted.text):
        return _text(gold_extracted, raw)
    values = _offered_values(summary, raw)
    if values:
        shown = " or ".join(values)
        if not set_like(gold_extracted.text):
            return Outcome(False, shown, gold_extracted.text,
                           f"answer offers more than one value ({short(shown)}); gold {short(gold_extracted.text)} is one")
        pred = Extracted(", ".join(values), "offered", True)  # a set of values, for a gold that is a set
    decided = fast(gold_extracted, pred, options)
    if decided:
        return decided
    if pred.text is not None:
        problem = text_guard(pred.text, options.max_answer_chars)
        if problem:
            return Outcome(False, pred.text[:options.max_answer_chars], gold_extracted.text, problem)
    return _sympy_path(gold, summary, gold_extracted, pred, options)


def _text(gold: Extracted, raw: Extracted) -> Outcome:
    """A gold in words: the same words pass; other wording is for a judge to read, not a rule."""
    if raw.text is None:
        return Outcome(None, None, gold.text, "no final answer found")
    if _plain(raw.text) == _plain(gold.text or ""):
        return _verdict(True, raw.text, gold.text, "text")
    return Outcome(None, raw.text, gold.text,
                   f"gold {short(gold.text)} is not a mathematical answer; answer {short(raw.text)} needs a judge",
                   not_math=True)


def _sympy_path(gold: str, summary: str, gold_extracted: Extracted, pred: Extracted, options: Options) -> Outcome:
    """math-verify, guarded. An answer found after a marker (or a self-corrected last box) is parsed
    alone and graded whole; otherwise math-verify reads the whole summary with its own extraction.
    The reason names the answer that was graded."""
    summary_text = clean(summary, MAX_SCAN_CHARS)
    if pred.how in (*_MARKED, "boxed-last") and pred.text:
        answer_only = symbolic.parse(_math(pred.text), options.match_types)
        if answer_only:
            return _graded(gold, gold_extracted, pred, answer_only, options)
    if text_guard(summary_text, MAX_SCAN_CHARS):  # a hostile summary: parse only the answer
        summary_text = f"${pred.text}$" if pred.text else ""
    pred_parsed = symbolic.parse(summary_text, options.match_types) if summary_text else []
    if not pred_parsed and pred.text:
        pred_parsed = symbolic.parse(f"${pred.text}$", options.match_types)
    return _graded(gold, gold_extracted, pred, pred_parsed, options, whole_summary=True)


def _math(text: str) -> str:
    return text if _DELIMITED.search(text) else f"${text}$"


def _graded(gold: str, gold_extracted: Extracted, pred: Extracted, pred_parsed: list, options: Options,
            whole_summary: bool = False) -> Outcome:
    gold_source = clean(gold, MAX_SCAN_CHARS)
    if text_guard(gold_source, MAX_SCAN_CHARS):
        gold_source = gold_extracted.text or ""
    gold_exprs, gold_str, gold_problem = symbolic.split(
        list(symbolic.parse_gold(gold_text(gold_source, gold_extracted), options.match_types)))
    pred_exprs, pred_str, pred_problem = symbolic.split(pred_parsed)
    # the answer named in the reason is the one graded: math-verify's pick when it read the summary
    answer = (pred_str or pred.text) if whole_summary else (pred.text or pred_str)
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
    if not equal and options.rounding:
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
