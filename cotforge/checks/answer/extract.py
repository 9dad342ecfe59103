"""Find the final answer in a completion's summary and in a gold answer.

Looked for, in this order (the last occurrence of each wins): `<answer>...</answer>`, the last
`\\boxed{}` (when all boxes agree), "the (final) answer is ..." / "Answer: ..." / "答案是 ...",
GSM8K's `#### N` and `A: N`, and a text that is short enough to be the answer itself. The reasoning
is never searched: the caller passes the summary (the text after `</think>`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_SCAN_CHARS = 20_000  # only the tail of a summary is searched: answers come last
MAX_BOXES = 16  # only the last boxes count
MAX_BOX_CHARS = 4_000
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x00-\x08\x0b\x0e-\x1f\x7f]")  # ANSI escapes too
_BOX = re.compile(r"\\(?:boxed|fbox)\s*(?=\{)|\\boxed\s+(?=[^{\s])")
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)
# "The (final) answer is ...", in the languages the `language` check knows. The expression after
# the last such phrase is the answer; adverbs after the verb ("La réponse est donc 315") are skipped.
_THEN = r"(?:\s+(?:therefore|thus|then|so|donc|alors|also|daher|somit|entonces|pues|quindi|dunque|então|portanto|dus|итак|тогда))?"
_ANCHOR = re.compile(
    r"\banswer\s*(?:(?:is|should\s+be|would\s+be|will\s+be)" + _THEN + r"\s*[:：]?|[:：=])[\s*]*"
    r"|\banswer\s+(?=\$|\\\(|\\\[)"
    r"|(?:最终答案|答案|答)\s*(?:是|为|為|应为|應為|:|：)+\s*"
    r"|(?:答えは|答え\s*[:：]|解答\s*[:：])\s*"
    r"|(?:정답은|정답\s*[:：]|답은|답\s*[:：])\s*"
    r"|\b(?:la\s+)?r[ée]ponse(?:\s+finale)?\s*(?:(?:est|sera)" + _THEN + r"(?:\s+de)?\s*[:：]?|[:：=])[\s*]*"
    r"|\b(?:die\s+)?antwort\s*(?:(?:ist|lautet)" + _THEN + r"\s*[:：]?|[:：=])[\s*]*"
    r"|\b(?:la\s+)?respuesta(?:\s+final)?\s*(?:es" + _THEN + r"\s*[:：]?|[:：=])[\s*]*"
    r"|\b(?:la\s+)?risposta(?:\s+finale)?\s*(?:è|e'|sarà)?" + _THEN + r"\s*[:：]?[\s*]*(?=[-+$\\(\d])"
    r"|\b(?:a\s+)?resposta(?:\s+final)?\s*(?:é|e|será)?" + _THEN + r"\s*[:：]?[\s*]*(?=[-+$\\(\d])"
    r"|\b(?:het\s+)?antwoord\s*(?:is" + _THEN + r"\s*[:：]?|[:：=])[\s*]*"
    r"|\bответ\s*(?:(?:равен|будет|—|-)\s*|[:：=]\s*)[\s*]*"
    r"|(?:الإجابة|الجواب)\s*(?:هي|هو|[:：])?\s*"
    r"|उत्तर\s*(?:है|[:：])\s*",
    re.IGNORECASE)
_HASHES = re.compile(r"####\s*([^\n]+)")
_A_LINE = re.compile(r"^\s*A\s*[:：]\s*([^\n]+)$", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<!\d)\.(?!\d)|[。；;\n]|(?<=\d)\.(?=\s|$)")
# inline math ($...$, \\(...\\)) never spans lines; display math may
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$((?:[^$\n\\]|\\.)+?)\$|\\\(([^\n]+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_CORRECTION = re.compile(r"\b(?:wait|wrong|mistake|incorrect|actually|correction|re-?check|instead|oops|"
                         r"let me (?:redo|recompute|recheck|fix)|not right)\b|不对|错了|等等", re.IGNORECASE)
# Words that mark a box as a first attempt or the next one as the committed answer: "My first try
# gives \boxed{11}; that drops a carry, so the final answer is \boxed{12}."
_RETRACTED = re.compile(
    r"\b(?:first (?:try|attempt|guess|answer|pass|count|calculation|result)|initially|at first|originally|naive(?:ly)?|earlier|before|previous(?:ly)?|on second thought|"
    r"recount\w*|recomput\w*|redo\w*|correct(?:ed|ion|ly)?|fix(?:ed|ing)?|drops?|forgot|missed|overlooked|"
    r"final(?:ly)?|revis\w*|d'abord|zuerst|primero|prima)\b|最初|一开始|修正|最终|所以答案", re.IGNORECASE)
_TRAILER = re.compile(r"\s*(?:I hope it is correct\.?|\.)\s*$", re.IGNORECASE)


class Extracted(NamedTuple):
    text: str | None  # the answer as written, or None
    how: str  # answer-tag | boxed | boxed-last (after a self-correction) | anchor | hashes | a-line | whole | none
    strong: bool  # found by an explicit marker (safe to decide on without math-verify)


def clean(text: str | None, max_chars: int = MAX_SCAN_CHARS) -> str:
    """Drop control characters (keeping \\t \\n \\r \\f) and keep the last `max_chars`."""
    if not text:
        return ""
    if len(text) > max_chars:
        text = text[-max_chars:]
    return _CONTROL.sub(" ", text)


def braced(text: str, start: int, limit: int = MAX_BOX_CHARS) -> str | None:
    """Content of the `{...}` group opening at `text[start]`, or None when it does not close
    within `limit` characters."""
    depth = 0
    for index in range(start, min(len(text), start + limit)):
        char = text[index]
        if char == "{" and (index == 0 or text[index - 1] != "\\"):
            depth += 1
        elif char == "}" and text[index - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1:index]
    return None


def boxed_contents(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5`, in order."""
    found = []
    for match in list(_BOX.finditer(text))[-MAX_BOXES:]:
        end = match.end()
        if end < len(text) and text[end] == "{":
            content = braced(text, end)
        else:
            content = re.match(r"[^\s$]+", text[end:])
            content = content.group(0) if content else None
        if content is not None:
            found.append(content.strip())
    return found


def corrected(text: str) -> bool:
    """Boxes that disagree, where the text around the last two says the earlier one was retracted
    ("\\boxed{12}. Wait, that is wrong ... \\boxed{10}", "My first try gives \\boxed{11}; ... so the
    final answer is \\boxed{12}"): the last final answer counts. Without such words ("x = \\boxed{3}
    and y = \\boxed{5}") the boxes may be parts of one answer, and math-verify reads them all."""
    starts = [match.start() for match in _BOX.finditer(text)]
    if len(starts) < 2:
        return False
    between = text[starts[-2]:starts[-1]]
    before = text[max(0, starts[-2] - 120):starts[-2]]
    return bool(_CORRECTION.search(between) or _RETRACTED.search(between) or _ANCHOR.search(between)
                or _RETRACTED.search(before))


def _anchored(text: str) -> tuple[int, str] | None:
    """(position, answer) of the last "answer is ..." that is followed by something."""
    for match in reversed(list(_ANCHOR.finditer(text))):
        rest = text[match.end():match.end() + 400].lstrip()
        span = _MATH_SPAN.match(rest)
        if span:
            answer = next(group for group in span.groups() if group is not None)
        else:
            end = _SENTENCE_END.search(rest)
            answer = rest[:end.start()] if end else rest
        answer = _TRAILER.sub("", answer).strip(" *\t")
        if answer.strip("$\\()[] \n"):
            return match.start(), answer
    return None


def _marked(text: str) -> Extracted | None:
    """The last of: "the answer is ...", `#### N`, a line `A: N`."""
    found = []
    anchored = _anchored(text)
    if anchored:
        found.append((anchored[0], anchored[1], "anchor"))
    for how, pattern in (("hashes", _HASHES), ("a-line", _A_LINE)):
        last = None
        for last in pattern.finditer(text):
            pass
        if last:
            found.append((last.start(), last.group(1).strip(), how))
    if not found:
        return None
    _, answer, how = max(found)
    return Extracted(answer, how, True)


def final_answer(summary: str | None) -> Extracted:
    """The final answer of a summary (text after the reasoning)."""
    text = clean(summary)
    tags = _ANSWER_TAG.findall(text)
    if tags and tags[-1].strip():
        inner = tags[-1].strip()
        boxes = boxed_contents(inner)
        return Extracted(boxes[-1] if boxes else inner, "answer-tag", True)
    boxes = boxed_contents(text)
    if boxes:
        if len(set(boxes)) > 1 and corrected(text):
            return Extracted(boxes[-1], "boxed-last", True)
        return Extracted(boxes[-1], "boxed", len(set(boxes)) == 1)
    marked = _marked(text)
    if marked:
        return marked
    stripped = text.strip()
    if stripped and len(stripped) <= 100 and "\n" not in stripped:
        return Extracted(stripped, "whole", True)
    return Extracted(None, "none", False)


def gold_answer(gold: str | None) -> Extracted:
    """The answer in a gold field: bare (`18`, `\\frac{1}{2}`) or a worked solution (`... #### 18`)."""
    text = clean(gold)
    hashes = _HASHES.findall(text)
    if hashes:
        return Extracted(hashes[-1].strip(), "hashes", True)
    lines = text.strip().splitlines()
    if lines:
        last = _A_LINE.match(lines[-1])
        if last:
            return Extracted(last.group(1).strip(), "a-line", True)
    boxes = boxed_contents(text)
    if boxes:
        return Extracted(boxes[-1], "boxed", len(set(boxes)) == 1)
    stripped = text.strip()
    if stripped and len(stripped) <= 200:
        return Extracted(stripped, "whole", True)
    return Extracted(None, "none", False)
