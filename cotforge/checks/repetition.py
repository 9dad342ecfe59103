"""`repetition`: a long chain of thought that loops, measured in its reasoning and its summary apart.

What a loop looks like in R1-style output, and what this check catches:
- a back-to-back run: the same stretch of words repeated at least `min_copies` times in a row
  ("Wait, perhaps I need to express it as a fraction. 2200 / 288 = ... Wait, perhaps I need ...");
- the same sentence, line or paragraph over and over anywhere in the field (at least
  `max_unit_repeats` + 1 times), counted only for units of `min_unit_words` words or more, so that
  "Let me check." or "Wait." repeat freely;
- the final answer restated again and again (more than `max_answer_repeats` answer statements in
  the summary, `max_reasoning_answer_repeats` in the reasoning).
What it does not catch, on purpose: a summary that restates the reasoning (R1's summaries do), a
reasoning that re-checks a step a few times, repeated short formulas or list layouts. Gopher's
web-page thresholds, which reject such traces, remain available as `gopher_repetition`.

Measured on tests/data/real_traces (184 public Sky-T1 traces, tests/data/real_traces/README.md) with
`python benchmarks/filter_real_traces.py`:
    false rejects on the 60 finished traces (closed reasoning and a summary):   0/60 (0%)
    catches on the 46 looping traces (a 200-character block 3+ times in the last 4,000): 40/46 (87%);
    the 6 missed revisit one passage 3 times, not back to back, which clean traces also do (up to 5)
    flagged among the 78 truncated traces that do not loop by that rule:         9/78 (earlier loops)
    Gopher's thresholds (`gopher_repetition`) on the same traces: 18/60 false rejects, 46/46 catches.
The score is a reward: 1 without a loop, else 1 minus the share of the field's words the loop covers.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import NamedTuple

from cotforge.checks.answer.extract import boxed_contents
from cotforge.checks.base import NO_TEXT, Check, Verdict, register
from cotforge.checks.text import cjk_count, reasoning_and_summary, tokens

_UNIT_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_ANSWER_STATEMENT = re.compile(r"\b(?:final\s+answer|the\s+answer\s+is|answer\s*:)|(?:最终答案|答案是|答案为)",
                               re.IGNORECASE)
_NORMALIZE = re.compile(r"\W+")
_ASCII_TOKEN = re.compile(r"[a-z0-9]+")  # `tokens` for lower-cased ASCII text, faster


class Loop(NamedTuple):
    what: str  # human-readable: "a 23-word stretch repeated 5 times back to back"
    share: float  # share of the field's words the loop covers


class IncrementalTandem:
    """`tandem_repeat` advanced word by word over a growing word list (the early stop feeds it a
    sample's words as they come; `tandem_repeat` feeds it a whole text at once): after `advance(words)`
    its answer is the one for those words, so its answer on a prefix is the prefix's."""

    def __init__(self, n: int, min_copies: int, min_tokens: int) -> None:
        self.n, self.min_copies, self.min_tokens = n, min_copies, min_tokens
        self.next_end = n  # the end (exclusive) of the next n-gram to take
        self.last: dict[tuple, int] = {}
        self.run_gap = self.run_start = self.run_length = 0
        self.best: tuple[int, int, int, int] | None = None  # (covered, period, copies, start)
        self.words: list[str] = []

    def advance(self, words: list[str]) -> None:
        """Take the words of `words` (the whole list so far) not taken yet."""
        n, last = self.n, self.last
        gap_run, start, length, best = self.run_gap, self.run_start, self.run_length, self.best
        for end in range(self.next_end, len(words) + 1):
            index = end - n
            gram = tuple(words[index:end])
            previous = last.get(gram)
            last[gram] = index
            gap = index - previous if previous is not None else 0
            if gap and gap == gap_run:
                length += 1
            else:
                gap_run, start, length = gap, index, 1 if gap else 0
            if gap_run:
                covered = length + n - 1 + gap_run
                if covered >= self.min_tokens and covered // gap_run >= self.min_copies and (
                        best is None or covered > best[0]):
                    best = (covered, gap_run, covered // gap_run, start - gap_run)
        self.next_end = max(self.next_end, len(words) + 1)
        self.run_gap, self.run_start, self.run_length, self.best = gap_run, start, length, best
        self.words = words

    def copy(self) -> IncrementalTandem:
        twin = IncrementalTandem(self.n, self.min_copies, self.min_tokens)
        twin.next_end, twin.last, twin.words = self.next_end, dict(self.last), self.words
        twin.run_gap, twin.run_start, twin.run_length, twin.best = self.run_gap, self.run_start, self.run_length, self.best
        return twin

    def what(self) -> str:
        _, period, copies, start = self.best
        excerpt = " ".join(self.words[start:start + min(period, 12)])
        return f"loops: a {period}-word stretch repeated {copies} times back to back ('{excerpt}...')"


def tandem_repeat(words: list[str], n: int, min_copies: int, min_tokens: int) -> tuple[int, int, int] | None:
    """The largest back-to-back repeat: (period in words, copies, start word index), or None.

    Each n-gram is compared with its previous occurrence; where consecutive n-grams all recur at the
    same distance d, the text is periodic with period d, and a stretch of L such n-grams covers
    L + n - 1 + d words: (L + n - 1) / d + 1 copies.
    """
    run = IncrementalTandem(n, min_copies, min_tokens)
    run.advance(words)
    return None if run.best is None else run.best[1:]


def _units(text: str) -> list[str]:
    sentences = [s for s in _UNIT_SPLIT.split(text) if s.strip()]
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    return sentences + [p for p in paragraphs if "\n" in p.strip()]


def _answer_statements(text: str) -> int:
    return len(_ANSWER_STATEMENT.findall(text)) + len(boxed_contents(text))


@register
class RepetitionCheck(Check):
    name = "repetition"
    min_copies: int = 3  # a stretch repeated this many times in a row is a loop ...
    min_loop_words: int = 40  # ... when the repeats cover at least this many words
    ngram: int = 5  # words per n-gram when finding back-to-back repeats (CJK: characters x cjk_ngram_scale)
    max_unit_repeats: int = 6  # a sentence / line / paragraph may occur this many times
    min_unit_words: int = 8  # shorter units ("Let me check.", "Wait.") repeat freely
    max_answer_repeats: int = 5  # answer statements ("the answer is", \\boxed) allowed in the summary
    max_reasoning_answer_repeats: int = 12  # ... and in the reasoning, where re-checking restates it
    cjk_ngram_scale: int = 2  # a Chinese word is about two characters
    field: str = "both"  # reasoning and summary, each measured on its own; or "reasoning" / "summary"

    def check(self, sample: dict) -> Verdict:
        reasoning, summary = reasoning_and_summary(sample)
        if not reasoning.strip() and not summary.strip():
            return Verdict.skip("no text", code=NO_TEXT)
        fields = {"both": (("reasoning", reasoning), ("summary", summary)), "reasoning": (("reasoning", reasoning),),
                  "summary": (("summary", summary),)}[self.field]
        worst: tuple[str, Loop] | None = None
        for name, text in fields:
            answers = self.max_answer_repeats if name == "summary" else self.max_reasoning_answer_repeats
            loop = self.find_loop(text, answers)
            if loop and (worst is None or loop.share > worst[1].share):
                worst = (name, loop)
        if worst:
            name, loop = worst
            return Verdict.fail(f"{name} loops: {loop.what}", max(0.0, 1.0 - loop.share))
        return Verdict.ok()

    def find_loop(self, text: str, max_answers: int) -> Loop | None:
        """The loop in one field (reasoning or summary), or None."""
        ascii_text = text.isascii()
        words = _ASCII_TOKEN.findall(text.lower()) if ascii_text else tokens(text.lower())
        if not words:
            return None
        scale = 1 if ascii_text or cjk_count(text) * 2 <= len(words) else self.cjk_ngram_scale
        run = tandem_repeat(words, self.ngram * scale, self.min_copies, self.min_loop_words * scale)
        if run:
            period, copies, start = run
            excerpt = " ".join(words[start:start + min(period, 12)])
            return Loop(f"a {period}-word stretch repeated {copies} times back to back ('{excerpt}...')",
                        min(1.0, period * copies / len(words)))
        counts: Counter = Counter()
        units = _units(text)
        if len(units) > self.max_unit_repeats:  # fewer units cannot repeat often enough
            for unit in units:
                size = len(_ASCII_TOKEN.findall(unit.lower())) if ascii_text else len(tokens(unit))
                if size >= self.min_unit_words * scale:
                    counts[_NORMALIZE.sub(" ", unit.lower()).strip()] += 1
        if counts:
            unit, count = counts.most_common(1)[0]
            if count > self.max_unit_repeats:
                size = len(tokens(unit))
                return Loop(f"the same {size}-word sentence or line {count} times ('{unit[:60]}') "
                            f"> {self.max_unit_repeats}", min(1.0, size * count / len(words)))
        answers = _answer_statements(text)
        if answers > max_answers:
            return Loop(f"the final answer stated {answers} times > {max_answers}", min(1.0, answers / len(words)))
        return None
