"""`answer`: the completion's final answer equals the gold answer (math by default).

Options map onto math-verify's grader options, so its regression cases run unchanged:
`match_types` (which extractors the sympy path uses), `precision` (`float_rounding`: decimals a
float is compared at), `strict` (variable names matter), `allow_set_relation`
(`allow_set_relation_comp`: `-2 <= x <= 7` may equal `[-2, 7]` either way round).
A sample's `answer_type` routes it: `choice` and `numeric` use those checks' logic with their
defaults, `code` is skipped (its tests judge it), `text` compares normalised strings; without an
`answer_type`, domain `code` means code and anything else means math.
"""

from __future__ import annotations

import multiprocessing
import re

from cotforge.checks.answer import symbolic
from cotforge.checks.answer.choice import ChoiceCheck
from cotforge.checks.answer.common import MATH_REQUIRES, summary_of
from cotforge.checks.answer.equivalence import Options, compare
from cotforge.checks.answer.guards import MAX_ANSWER_CHARS
from cotforge.checks.answer.numeric import NumericCheck
from cotforge.checks.base import NOT_MATH, OUT_OF_DOMAIN, UNDECIDED, Check, Verdict, register

# The prompt asks for a rounded or decimal answer: only then may 0.333 stand for 1/3.
_ROUNDING = re.compile(
    r"\bround(?:ed|ing)?\b|decimal (?:places?|digits?|form)|\bas a decimal\b|\bnearest\s+(?:tenth|hundredth|"
    r"thousandth|whole|integer|cent|dollar|percent|degree|unit)|significant (?:figures?|digits?)|"
    r"\bapproximate(?:ly)?\b|\bestimate\b|四舍五入|保留.{0,4}小数|精确到", re.IGNORECASE)


def asks_for_rounding(prompt) -> bool:
    return isinstance(prompt, str) and bool(_ROUNDING.search(prompt))


@register
class AnswerCheck(Check):
    name = "answer"
    verifies = True
    timeout_s = 5.0  # sympy on a hostile answer; the chain kills the worker past this
    requires = MATH_REQUIRES
    preload = ("cotforge.checks.answer.warm",)  # workers fork with sympy and the parser warm (base.Check)
    match_types: str = "latex,expr"  # math-verify extraction targets, comma-separated
    precision: int = 6  # math-verify's default float_rounding
    strict: bool = True  # math-verify default: f(x) != f(y)
    allow_set_relation: bool = False  # math-verify default
    max_answer_chars: int = MAX_ANSWER_CHARS
    # May a decimal stand for an exact gold at the places it states (2.6667 for 8/3)? "prompt": only
    # when the prompt asks for rounding; "always": math-verify's own behaviour; "never".
    rounding: str = "prompt"

    def __post_init__(self) -> None:
        if self.rounding not in ("prompt", "always", "never"):
            raise ValueError(f"check 'answer': rounding {self.rounding!r}: choose prompt, always or never")
        unknown = sorted({t.strip() for t in self.match_types.split(",") if t.strip()} - set(symbolic.MATCH_TYPES))
        if unknown or not self.match_types.strip():
            raise ValueError(f"check 'answer': match_types {self.match_types!r}: a comma list of "
                             f"{', '.join(symbolic.MATCH_TYPES)}")
        if multiprocessing.parent_process() is not None:  # a pool worker: warm up before any item's
            symbolic.warm_up()  # time limit starts (a no-op where the fork server did it: answer/warm.py);
            # the main process imports sympy on first use

    def check(self, sample: dict) -> Verdict:
        answer_type = (sample.get("answer_type") or ("code" if sample.get("domain") == "code" else "math")).lower()
        if answer_type == "code":
            return Verdict.skip("code answers are judged by their tests", code=OUT_OF_DOMAIN)
        gold = sample.get("gold")
        if gold is None or not str(gold).strip():
            return Verdict.skip("no gold", missing="gold")
        if answer_type == "choice":
            return ChoiceCheck().check(sample)
        if answer_type == "numeric":
            return NumericCheck().check(sample)
        options = Options(tuple(t.strip() for t in self.match_types.split(",") if t.strip()),
                          self.precision, self.strict, self.allow_set_relation, self.max_answer_chars,
                          rounding=self.rounding == "always" or (
                              self.rounding == "prompt" and asks_for_rounding(sample.get("prompt"))))
        outcome = compare(str(gold), summary_of(sample), options, text_only=answer_type == "text")
        sample["answer"] = outcome.answer
        if outcome.not_math:  # words, not math: a judge decides; without one the sample is unverified
            return Verdict.skip(outcome.reason, code=NOT_MATH)
        if outcome.equal is None:
            return Verdict.fail(f"no final answer found (gold {outcome.gold})", code=UNDECIDED)
        if outcome.equal:
            return Verdict.ok(outcome.reason)
        return Verdict.fail(outcome.reason, code=UNDECIDED if undecided(outcome) else None)


def undecided(outcome) -> bool:
    """The rule could not read the answer or the gold: another grader (the judge) may decide."""
    return outcome.equal is None or outcome.reason.startswith(("answer not verifiable", "gold not verifiable"))
