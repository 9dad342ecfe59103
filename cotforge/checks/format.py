"""`format`: the completion parses into reasoning and a non-empty summary and was not cut off."""

from __future__ import annotations

from cotforge.checks.base import Check, Verdict, register
from cotforge.parsing import split_sample


@register
class FormatCheck(Check):
    name = "format"
    require_reasoning: bool = True  # R1's pattern: a reasoning block, then a summary
    special_token: str = "|special_token|"

    def check(self, sample: dict) -> Verdict:
        if sample.get("finish_reason") == "length":
            return Verdict.fail("truncated: finish_reason is 'length'")
        if sample.get("finish_reason") == "repetition":  # the engine stopped a loop (engines.repetition)
            return Verdict.fail(f"loop: the engine's repetition detection stopped it at token "
                                f"{sample.get('completion_tokens') or '?'}")
        completion = sample.get("completion")
        if completion is None:
            reasoning, summary, closed = sample.get("reasoning") or "", sample.get("summary") or "", True
        else:
            parsed = split_sample(sample, self.special_token)
            reasoning, summary, closed = parsed.reasoning, parsed.summary, parsed.closed
        if not closed:
            return Verdict.fail("truncated: reasoning block never closed")
        if self.require_reasoning and not reasoning.strip():
            return Verdict.fail("no reasoning block (<think>...</think> or |special_token|)")
        if not summary.strip():
            return Verdict.fail("empty summary after the reasoning")
        return Verdict.ok()
