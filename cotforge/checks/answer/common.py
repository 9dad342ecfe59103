"""What the answer checks share: the summary a sample's answer is looked for in."""

from __future__ import annotations

from cotforge.parsing import split_sample

# What the sympy path imports (module, pip package): a chain checks for them before the first row.
MATH_REQUIRES = (("sympy", "sympy"), ("math_verify", "math-verify"),
                 ("latex2sympy2_extended", "latex2sympy2_extended"))


def summary_of(sample: dict) -> str:
    """Text after the reasoning: from `completion` when present, else the `summary` field.

    A reasoning block that never closed has no summary: a truncated sample has no final answer, and
    neither has a completion whose `<think>` the prompt opened and that never closed it.
    """
    completion = sample.get("completion")
    if completion is None:
        return sample.get("summary") or ""
    parsed = split_sample(sample)
    if parsed.answer_tag is not None:
        return f"<answer>{parsed.answer_tag}</answer>"
    return parsed.summary
