"""What a final answer offers: its mathematical part, alternatives, and golds that are not math.

A final-answer phrase ("the answer is", "答案是", "la réponse est") introduces an answer that may
run on in prose: "12, ya que 3 × 5 = 15 no cumple", "每份应该是 (\\frac{2}{5}) 吨", "7 (not 8, ...)".
What is graded is the first stretch of mathematics after the phrase (`math_part`), whole: an
expression, an equation, an interval or a matrix, never one number picked out of it.

An answer that offers more than one value ("7 or 8", "x = 4 or x = -4", "30, unless ..., then 32")
commits to none of them (`alternatives`); only a gold that is itself a set may match it, as a set.

A gold made of words ("Paris", "George Washington", `\\text{odd}`) is not a mathematical answer
(`is_text_gold`): the rules accept a prediction that says exactly it, and leave any other wording to
a judge.
"""

from __future__ import annotations

import re

from cotforge.checks.answer.normalize import numbers_equal, parse_number

# Words that are mathematics, not prose, when they stand in an answer.
MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp sqrt pi inf infty lim max min "
    "gcd lcm mod det deg dx dy dt".split())
# Two-letter prose words (longer runs of letters are prose unless in MATH_WORDS; `xy`, `ab` are products).
SHORT_PROSE = frozenset(
    "is or if so of in on at to we as by it be an no ou la le de es en un et il da ya là är ja na ni".split())
# LaTeX whose braced argument is text or an environment name, not variables.
_TEXT_ARG = re.compile(r"\\(?:text\w*|mathrm|mathbf|mathit|operatorname|mbox|begin|end)\s*\{[^{}]*\}")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[^\W\d_]+")
_GREEK = re.compile(r"[\u0370-\u03ff]")
_EDGE = " \t\n,;:，；：、.。!！?？*"
_ARTICLES = ("a", "A")
_LEFT = _EDGE.replace(".", "")  # ".185" keeps its point
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$((?:[^$\n\\]|\\.)+?)\$|\\\(([^\n]+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)


def _masked(text: str) -> str:
    """`text` with LaTeX commands and text arguments blanked out (same length), so that the words
    left are the prose ones."""
    text = _TEXT_ARG.sub(lambda m: " " * len(m.group(0)), text)
    return _COMMAND.sub(lambda m: " " * len(m.group(0)), text)


def prose_words(text: str) -> list[re.Match]:
    """Words of `text` that are prose: 3+ letters not in MATH_WORDS, a two-letter function word, or
    any letter of a script other than Latin and Greek (CJK, Cyrillic, Arabic, ...)."""
    found = []
    for match in _WORD.finditer(_masked(text)):
        word = match.group(0)
        if not word.isascii() and not _GREEK.search(word):
            found.append(match)
        elif len(word) >= 3 and word.lower() not in MATH_WORDS or word.lower() in SHORT_PROSE:
            found.append(match)
    return found


def math_part(text: str | None) -> str | None:
    """The first stretch of mathematics in an answer that runs on in prose (None: there is none).

    A math span (`$...$`, `\\(...\\)`) at the start is taken whole; otherwise the text from the first
    non-prose character up to the next prose word, trimmed of punctuation."""
    if not text:
        return text
    stripped = text.lstrip(_LEFT).rstrip(_EDGE)
    span = _MATH_SPAN.match(stripped)
    if span:
        return next(group for group in span.groups() if group is not None).strip()
    words = prose_words(stripped)
    if not words:
        return stripped or None
    start = 0
    for word in words:  # skip the prose the answer starts with ("每份应该是", "Janeth aura encore")
        between = stripped[start:word.start()].strip(_EDGE + "()")
        if between and between not in _ARTICLES:  # "a zero matrix": an article, not the variable a
            break
        start = word.end()
    else:
        return None  # nothing but prose
    rest = stripped[start:]
    span = _MATH_SPAN.search(rest)
    cut = next((w.start() - start for w in words if w.start() >= start), len(stripped) - start)
    if span and span.start() < cut and not rest[:span.start()].strip(_EDGE + "()"):
        return next(group for group in span.groups() if group is not None).strip()
    chunk = rest[:cut].lstrip(_LEFT).rstrip(_EDGE)
    if cut < len(rest):  # "8 y no ...", "5 o 6": a one-letter conjunction before the prose, not a variable
        chunk = re.sub(r"(?<=[\d)}\]])\s+[A-Za-z]$", "", chunk)
    chunk = _balance(chunk)
    return chunk or None


def _balance(chunk: str) -> str:
    """Drop an unclosed opening bracket left where prose was cut off ("7 (" from "7 (not 8)")."""
    while chunk and chunk[-1] in "([{" and not chunk.endswith("\\{"):
        chunk = chunk[:-1].rstrip(_EDGE)
    if chunk.startswith("(") and chunk.endswith(")") and "=" in chunk:  # "(35 + 70 = 105)"
        chunk = chunk[1:-1].strip()
    return chunk


# Words that put a second value beside the first: "7 or 8", "30, unless ..., then 32", "5 或 6".
_ALTERNATIVE = re.compile(
    r"\b(?:or|and|either|unless|otherwise|alternatively|ou|sinon|oder|sonst|o|oppure|altrimenti|или|либо|иначе)\b"
    r"|或者|或|还是|否则|또는|あるいは|または|أو", re.IGNORECASE)
_VALUE = re.compile(r"\$[^$\n]+\$|\\\([^\n]+?\\\)|[-+−]?\s*\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?\s*(?:\\?%)?"
                    r"|\\[dtc]?frac\s*\{[^{}]*\}\s*\{[^{}]*\}")
_ASSIGN = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*=\s*")
_BOUND = re.compile(r"\b(?:more|less|fewer|greater|higher|lower|above|below|so)\b", re.IGNORECASE)


def _value_text(value: str) -> str:
    value = value.strip().rstrip(",").strip().strip("$").strip()
    if value.startswith("\\(") and value.endswith("\\)"):
        value = value[2:-2].strip()
    return _ASSIGN.sub("", value).strip()


def alternatives(text: str | None) -> list[str] | None:
    """The values of an answer that offers two or more different ones, joined by "or" (or the like),
    or None. Equal values ("1/2, or 50%") are one answer said twice."""
    if not text:
        return None
    for word in _ALTERNATIVE.finditer(text):
        before, after = text[:word.start()], text[word.end():]
        if _BOUND.match(after.lstrip()):  # "5 or more": a hedge, caught as such
            continue
        first = list(_VALUE.finditer(before))
        second = _VALUE.search(after)
        if not first or not second:
            continue
        values = [_value_text(first[-1].group(0)), _value_text(second.group(0))]
        if not all(values) or _same(*values):
            continue
        return values
    return None


def _same(first: str, second: str) -> bool:
    a, b = parse_number(first), parse_number(second)
    if a and b:
        return numbers_equal(a, b)
    return first.replace(" ", "") == second.replace(" ", "")


_SET_GOLD = re.compile(r"\\pm|±|\\mp|,|\bor\b|\band\b|\\cup|\\\{")


def set_like(gold: str | None) -> bool:
    """A gold that lists several values (`4, -4`, `\\pm 4`, `x = 1 or x = 2`, `\\{1, 2\\}`)."""
    if not gold:
        return False
    if parse_number(gold) is not None:  # 1,000 is one number
        return False
    return bool(_SET_GOLD.search(gold))


def is_text_gold(gold: str | None) -> bool:
    """A gold made of words, with no number, operator or math command: "Paris", `\\text{odd}`."""
    if not gold or re.search(r"\d|[=+*/^_<>|]|\\(?!text|mathrm|textbf|mbox)[A-Za-z]", gold):
        return False
    if re.search(r"\(\s*[A-Ea-e]\s*\)", gold):  # an option letter "(C)": the choice logic's
        return False
    if parse_number(gold) is not None:  # a number in words ("six") is a number
        return False
    inner = _TEXT_ARG.sub(lambda m: m.group(0)[m.group(0).index("{") + 1:-1], gold)
    words = [w for w in _WORD.findall(inner)]
    return any(len(w) >= 2 and w.lower() not in MATH_WORDS for w in words)
