"""`format`: the completion parses into one reasoning block and a non-empty summary, and was not cut off.

For SFT data a completion teaches its template token by token, so every layout that would teach a
broken one is rejected, with its reason: a second `<think>` block, a `<think>` nested in the
reasoning, a stray second `</think>`, and text before the opening `<think>`.

Where cotforge deliberately differs from the common format rewards:
- TRL's `think_format_reward` (`^<think>(?!.*<think>)(.*?)</think>.*$`) rejects a completion with no
  opening `<think>`. cotforge accepts `reasoning</think> summary`: R1's chat template (and R1-Zero's
  prompt) opens `<think>` itself, so the completions of those models start inside the block, and a
  samples file does not say which template produced it. A completion whose prompt opened `<think>`
  may also repeat the opening tag first (the parser takes it as the opener).
- TRL accepts an empty reasoning block (`<think></think>answer`); cotforge rejects it unless
  `require_reasoning: false` (the non-reasoning preset), since an R1-style sample without reasoning
  teaches nothing about reasoning.
- open-r1's `format_reward` requires exactly `<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>`;
  cotforge accepts R1's `</think>` + summary and R1-Zero's `<answer>` layouts, with any whitespace
  around the tags (the export writes its own canonical layout), but requires a non-empty summary.
- Both reject a truncated block (no `</think>`) as cotforge does; cotforge also rejects a sample the
  engine reports as cut off (`finish_reason: length`) even when its tags happen to balance.
"""

from __future__ import annotations

import re

from cotforge.checks.base import Check, Verdict, register
from cotforge.parsing import SPECIAL_TOKEN, opens_think, split_sample

_TAG = re.compile(r"</?think>")


def _snippet(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def think_layout_problem(text: str, opened: bool = False) -> str | None:
    """Why the `<think>` tags of `text` do not make one reasoning block followed by the summary, or
    None. `opened`: the prompt (or chat template) already opened the block."""
    tags = [(m.group(0), m.start()) for m in _TAG.finditer(text)]
    if not tags:
        return None
    first_tag, first_at = tags[0]
    if first_tag == "<think>":
        before = text[:first_at]
        if before.strip() and not opened:
            return f"text before the opening <think>: {_snippet(before)}"
        if before.strip() and opened:  # the block was open from the start: this is a nested opener
            return "nested <think> inside the reasoning block (the prompt had opened it)"
        tags = tags[1:]  # the opener (or, where the prompt opened the block, its harmless repeat)
    closed = False
    for tag, _ in tags:
        if tag == "<think>" and not closed:
            return "nested <think> inside the reasoning block"
        if tag == "<think>":
            return "a second <think> block after the first"
        if closed:
            return "a second </think> after the reasoning block closed"
        closed = True
    return None


def special_token_problem(text: str, token: str) -> str | None:
    """The readable pattern has exactly two special tokens (`|t|reasoning|t|summary`)."""
    count = text.count(token)
    if count > 2 and text.strip().startswith(token):
        return f"{token} appears {count} times (the pattern has two: {token}reasoning{token}summary)"
    return None


@register
class FormatCheck(Check):
    name = "format"
    require_reasoning: bool = True  # R1's pattern: a reasoning block, then a summary
    special_token: str = SPECIAL_TOKEN

    def check(self, sample: dict) -> Verdict:
        if sample.get("finish_reason") == "length":
            return Verdict.fail("truncated: finish_reason is 'length'")
        if sample.get("finish_reason") == "repetition":  # the engine stopped a loop (engines.repetition)
            return Verdict.fail(f"loop: the engine's repetition detection stopped it at token "
                                f"{sample.get('completion_tokens') or '?'}")
        if (sample.get("finish_reason") or "").startswith("stopped:"):  # generate's early stop (checks/early.py)
            return Verdict.fail(f"stopped early by {sample['finish_reason'].removeprefix('stopped:')} "
                                f"at token {sample.get('completion_tokens') or '?'}: not finished")
        completion = sample.get("completion")
        if completion is None:
            reasoning, summary, closed = sample.get("reasoning") or "", sample.get("summary") or "", True
            problem = think_layout_problem(f"<think>{reasoning}</think>{summary}")
        else:
            parsed = split_sample(sample, self.special_token)
            reasoning, summary, closed = parsed.reasoning, parsed.summary, parsed.closed
            opened = bool(sample.get("think_opened")) or opens_think(sample.get("prompt")) \
                or opens_think(sample.get("messages"))
            problem = special_token_problem(completion, self.special_token) if parsed.style == "special-token" \
                else think_layout_problem(completion, opened)
        if not closed:
            return Verdict.fail("truncated: reasoning block never closed")
        if problem:
            return Verdict.fail(f"malformed: {problem}")
        if self.require_reasoning and not reasoning.strip():
            return Verdict.fail("no reasoning block (<think>...</think> or |special_token|)")
        if not summary.strip():
            return Verdict.fail("empty summary after the reasoning")
        return Verdict.ok()
