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

from cotforge.checks.answer import symbolic
from cotforge.checks.answer.choice import ChoiceCheck
from cotforge.checks.answer.common import summary_of
from cotforge.checks.answer.equivalence import Options, compare
from cotforge.checks.answer.guards import MAX_ANSWER_CHARS
from cotforge.checks.answer.numeric import NumericCheck
from cotforge.checks.base import Check, Verdict, register


@register
class AnswerCheck(Check):
    name = "answer"
    timeout_s = 5.0  # sympy on a hostile answer; the chain kills the worker past this
    match_types: str = "latex,expr"  # math-verify extraction targets, comma-separated
    precision: int = 6  # math-verify's default float_rounding
    strict: bool = True  # math-verify default: f(x) != f(y)
    allow_set_relation: bool = False  # math-verify default
    max_answer_chars: int = MAX_ANSWER_CHARS

    def __post_init__(self) -> None:
        if multiprocessing.parent_process() is not None:  # a pool worker: warm up before any item's
            symbolic.warm_up()  # time limit starts; the main process imports sympy on first use

    def check(self, sample: dict) -> Verdict:
        gold = sample.get("gold")
        if gold is None or not str(gold).strip():
            return Verdict.skip("no gold")
        answer_type = (sample.get("answer_type") or ("code" if sample.get("domain") == "code" else "math")).lower()
        if answer_type == "choice":
            return ChoiceCheck().check(sample)
        if answer_type == "numeric":
            return NumericCheck().check(sample)
        if answer_type == "code":
            return Verdict.skip("code answers are judged by their tests")
        options = Options(tuple(t.strip() for t in self.match_types.split(",") if t.strip()),
                          self.precision, self.strict, self.allow_set_relation, self.max_answer_chars)
        outcome = compare(str(gold), summary_of(sample), options, text_only=answer_type == "text")
        sample["answer"] = outcome.answer
        if outcome.equal is None:
            return Verdict.fail(f"no final answer found (gold {outcome.gold})")
        return Verdict.ok(outcome.reason) if outcome.equal else Verdict.fail(outcome.reason)
