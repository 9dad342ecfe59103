"""Readability checks of the reasoning: `code_block`, `paragraph`, `gopher_repetition`, `length`.

`gopher_repetition` follows Gopher (Rae et al. 2021, table A1), as datatrove's GopherRepetitionFilter
documents it:
    duplicate line fraction 0.30             duplicate line character fraction 0.20
    duplicate paragraph fraction 0.30        duplicate paragraph character fraction 0.20
    top 2/3/4-gram character fraction 0.20 / 0.18 / 0.16
    duplicate 5..10-gram character fraction 0.15, 0.14, 0.13, 0.12, 0.11, 0.10
Words are `\\w+` runs; text without spaces (CJK) is cut into characters, and since a Chinese word is
about two characters, n-grams of CJK text are `cjk_ngram_scale` times longer.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import field
from itertools import compress

from cotforge.checks.base import NO_TEXT, OUT_OF_DOMAIN, Check, Verdict, register
from cotforge.checks.text import (
    CODE_DOMAINS,
    cjk_count,
    is_code_domain,
    reasoning_and_summary,
    strip_display_math,
    strip_fenced_code,
    tokens,
)

_FENCE_LINE = re.compile(r"^[ \t]{0,3}(```|~~~)[ \t]*([^\s`]*)", re.MULTILINE)
_INDENTED = re.compile(r"^(?: {4,}|\t)\S")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_ALNUM = re.compile(r"\w")


def _text(sample: dict, field: str) -> str:
    reasoning, summary = reasoning_and_summary(sample)
    if field == "summary":
        return summary
    if field == "both":
        return f"{reasoning}\n\n{summary}"
    return reasoning or summary  # a plain answer (no reasoning block) is judged as its own reasoning


def _indented_code(text: str, min_lines: int) -> tuple[int, int] | None:
    """(first line number, line count) of the first Markdown indented code block, or None."""
    lines = text.split("\n")
    start, count = None, 0
    for number, line in enumerate(lines + [""]):
        if _INDENTED.match(line) and not _LIST_ITEM.match(line) and (count or not number or not lines[number - 1].strip()):
            start, count = (number if not count else start), count + 1
            continue
        if count >= min_lines:
            return start + 1, count
        start, count = None, 0
    return None


@register
class CodeBlockCheck(Check):
    name = "code_block"
    # R1's readability rule: no code in the reasoning of non-code questions.
    code_domains: list = field(default_factory=lambda: list(CODE_DOMAINS))
    min_indented_lines: int = 2  # one indented line is more often a wrapped formula than code
    field: str = "reasoning"

    def check(self, sample: dict) -> Verdict:
        if is_code_domain(sample, [d.lower() for d in self.code_domains]):
            return Verdict.skip(f"code domain '{sample.get('domain') or sample.get('answer_type')}'",
                                code=OUT_OF_DOMAIN)
        text = _text(sample, self.field)
        fence = _FENCE_LINE.search(text)
        domain = sample.get("domain") or "non-code"
        if fence:
            line = text.count("\n", 0, fence.start()) + 1
            return Verdict.fail(f"fenced code block ({fence.group(1)}{fence.group(2)}) at line {line} "
                                f"in {domain} reasoning")
        indented = _indented_code(strip_display_math(text), self.min_indented_lines)
        if indented:
            return Verdict.fail(f"indented code block ({indented[1]} lines >= {self.min_indented_lines}) "
                                f"at line {indented[0]} in {domain} reasoning")
        return Verdict.ok()


def paragraph_length(paragraph: str, cjk_weight: float) -> float:
    cjk = cjk_count(paragraph)
    return len(paragraph) - cjk + cjk * cjk_weight


@register
class ParagraphCheck(Check):
    name = "paragraph"
    # About 350 English words; R1 drops "long paragraphs" without a figure, so this is our choice.
    max_chars: int = 2000
    cjk_char_weight: float = 2.0  # a CJK character carries about two Latin characters' worth of text
    field: str = "reasoning"

    def check(self, sample: dict) -> Verdict:
        text = strip_fenced_code(_text(sample, self.field))  # code blocks are code_block's business
        paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
        if not paragraphs:
            return Verdict.skip("no text", code=NO_TEXT)
        lengths = [paragraph_length(p, self.cjk_char_weight) for p in paragraphs]
        longest = max(lengths)
        index = lengths.index(longest)
        if longest > self.max_chars:
            return Verdict.fail(f"paragraph {index + 1}/{len(paragraphs)} is {longest:.0f} chars "
                                f"> {self.max_chars}", self.max_chars / longest)
        return Verdict.ok(f"longest paragraph {longest:.0f} chars <= {self.max_chars}")


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number, characters) of items that repeat an earlier item."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def duplicate_ngram_chars(words: list[str], lengths: list[int], n: int) -> int:
    """Characters of words covered by an n-gram that occurred earlier (each word counted once)."""
    seen: set[tuple] = set()
    covered = bytearray(len(words))
    mark = b"\x01" * n
    for index, gram in enumerate(zip(*(words[i:] for i in range(n)))):
        if gram in seen:
            covered[index:index + n] = mark
        else:
            seen.add(gram)
    return sum(compress(lengths, covered))


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram: its length times its count."""
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = counts.most_common(1)[0]
    return sum(map(len, gram)) * count if count > 1 else 0


@register
class GopherRepetitionCheck(Check):
    """Web-page repetition thresholds. Long chains of thought trip them (a summary restating the
    reasoning is a duplicated 5-gram share of ~0.2): for reasoning data use `repetition`."""

    name = "gopher_repetition"
    dup_line_frac: float = 0.30
    dup_line_char_frac: float = 0.20
    dup_para_frac: float = 0.30
    dup_para_char_frac: float = 0.20
    top_ngrams: dict = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    dup_ngrams: dict = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    cjk_ngram_scale: int = 2
    # Gopher applied its table to documents of 50+ words; n-gram shares of a three-line answer are noise.
    min_words: int = 50
    field: str = "reasoning"

    def __post_init__(self) -> None:
        # YAML may give string keys; null turns a family off
        self.top_ngrams = {int(n): float(f) for n, f in (self.top_ngrams or {}).items()}
        self.dup_ngrams = {int(n): float(f) for n, f in (self.dup_ngrams or {}).items()}

    def check(self, sample: dict) -> Verdict:
        text = _text(sample, self.field).strip()
        if not text:
            return Verdict.skip("no text", code=NO_TEXT)
        failure = self._lines_and_paragraphs(text) or self._ngrams(text)
        if failure:
            what, value, limit = failure
            # 1 at the threshold, 0 at twice the threshold: a graded penalty when used as a reward
            return Verdict.fail(f"{what} {value:.2f} > {limit:g}", max(0.0, 2.0 - value / limit))
        return Verdict.ok()

    def _lines_and_paragraphs(self, text: str) -> tuple[str, float, float] | None:
        for unit, pieces, frac, char_frac in (
                ("paragraph", _PARAGRAPH_BREAK.split(text), self.dup_para_frac, self.dup_para_char_frac),
                ("line", text.split("\n"), self.dup_line_frac, self.dup_line_char_frac)):
            # lines of only punctuation ("$$", "---", "\\]") repeat in any formatted text: not loops
            items = [p.strip() for p in pieces if _ALNUM.search(p)]
            if len(items) < 2:
                continue
            count, chars = _duplicates(items)
            if frac and count / len(items) > frac:
                return f"duplicate {unit}s", count / len(items), frac
            total = sum(map(len, items))
            if char_frac and chars / total > char_frac:
                return f"duplicate {unit} chars", chars / total, char_frac
        return None

    def _ngrams(self, text: str) -> tuple[str, float, float] | None:
        words = tokens(text)
        if len(words) < self.min_words:
            return None
        scale = self.cjk_ngram_scale if cjk_count(text) * 2 > len(words) else 1
        lengths = list(map(len, words))
        total = len(text)  # Gopher's denominator: all characters of the document
        for n, limit in sorted(self.top_ngrams.items()):
            if len(words) >= n * scale and (value := top_ngram_chars(words, n * scale) / total) > limit:
                return f"top {n * scale}-gram chars", value, limit
        smallest = min(self.dup_ngrams.values(), default=1.0)
        for n, limit in sorted(self.dup_ngrams.items()):
            value = duplicate_ngram_chars(words, lengths, n * scale) / total
            if value > limit:
                return f"duplicate {n * scale}-gram chars", value, limit
            if value <= smallest:  # longer n-grams cover no more than this one: nothing left to fail
                break
        return None


@register
class LengthCheck(Check):
    name = "length"
    # Characters: at least a sentence; at most R1's 32,768-token generation limit at ~4 chars a token.
    min_chars: int = 20
    max_chars: int | None = 131072
    # Words (CJK characters count as words); off unless set.
    min_words: int | None = None
    max_words: int | None = None
    field: str = "reasoning"

    def check(self, sample: dict) -> Verdict:
        text = _text(sample, self.field).strip()
        chars = len(text)
        words = len(tokens(text)) if self.min_words is not None or self.max_words is not None else None
        for unit, value, low, high in (("chars", chars, self.min_chars, self.max_chars),
                                       ("words", words, self.min_words, self.max_words)):
            if value is None:
                continue
            if low is not None and value < low:
                return Verdict.fail(f"{self.field} {value} {unit} < {low}", value / low if low else 0.0)
            if high is not None and value > high:
                return Verdict.fail(f"{self.field} {value} {unit} > {high}", high / value)
        return Verdict.ok(f"{self.field} {chars} chars" + (f", {words} words" if words is not None else ""))
