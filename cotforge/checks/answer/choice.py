"""`choice`: the option letter a completion picks equals the gold letter (A-E by default).

Understood: "the answer is (C)", "Answer: B", "**Answer:** (D)", `\\boxed{C}`, `\\boxed{\\text{(C)}}`,
"答案是 C", "选 B", and a summary that is only a letter ("(B)", "B.", "B) 42"). The gold may be a
letter, "(C)", or "C) text".
"""

from __future__ import annotations

import re

from cotforge.checks.answer.common import summary_of
from cotforge.checks.answer.extract import boxed_contents, clean
from cotforge.checks.base import Check, Verdict, register

_ANCHORS = (
    r"answer\s*(?:is|should\s+be|would\s+be)?\s*[:：]?",
    r"(?:correct|best|right)\s+(?:option|choice)\s*(?:is)?\s*[:：]?",
    r"(?:答案|选项|正确答案)\s*(?:是|为|為|:|：)?",
    r"选(?:择)?",
)


def _letter_pattern(letters: str) -> str:
    return rf"[({{\[]?\s*([{letters}])\s*[)}}\]]?(?![A-Za-z0-9])"


def find_letter(text: str, letters: str = "ABCDE") -> str | None:
    """The option letter `text` settles on, or None."""
    text = clean(text)
    letter = _letter_pattern(letters)
    for content in reversed(boxed_contents(text)):
        content = re.sub(r"\\text(?:bf)?\s*\{([^{}]*)\}", r"\1", content)
        match = re.fullmatch(rf"\s*{letter}.*", content, re.DOTALL)
        if match:
            return match.group(1)
    hits = []
    for anchor in _ANCHORS:
        for match in re.finditer(rf"(?:{anchor})[\s*]*(?:\$?\\?\(?)?\s*{letter}", text, re.IGNORECASE):
            if match.group(1).upper() == match.group(1):
                hits.append((match.start(), match.group(1)))
    if hits:
        return max(hits)[1]
    # A summary that is only an option: "(B)", "B.", "B) 42", "B: 42", "B" -- not a sentence that starts
    # with a capital letter ("A careful count gives 12.").
    whole = re.fullmatch(rf"\s*\**(?:[({{\[]\s*([{letters}])\s*[)}}\]]|([{letters}])(?:[.):]|\**(?=\s*$)))(?:\s.*)?",
                         text.strip(), re.DOTALL)
    if whole and len(text.strip()) <= 200:
        return whole.group(1) or whole.group(2)
    return None


def gold_letter(gold: str, letters: str = "ABCDE") -> str | None:
    match = re.match(rf"\s*{_letter_pattern(letters)}", gold)
    return match.group(1) if match else find_letter(gold, letters)


@register
class ChoiceCheck(Check):
    name = "choice"
    verifies = True
    timeout_s = 2.0
    letters: str = "ABCDE"  # the option letters a prompt may offer

    def check(self, sample: dict) -> Verdict:
        gold = sample.get("gold")
        if gold is None or not str(gold).strip():
            return Verdict.skip("no gold", missing="gold")
        expected = gold_letter(str(gold), self.letters)
        if expected is None:
            return Verdict.fail(f"gold {str(gold)[:40]!r} is not one of {self.letters}")
        picked = find_letter(summary_of(sample), self.letters)
        sample["answer"] = picked
        if picked is None:
            return Verdict.fail(f"no option letter ({self.letters}) found")
        if picked == expected:
            return Verdict.ok(f"choice {picked} = gold {expected}")
        return Verdict.fail(f"choice {picked} != gold {expected}")
