"""Text helpers shared by the language and readability checks (no check lives here).

Script classes come from Unicode code-point ranges, so nothing is loaded; `tokens` splits text into
words where words are spaced and into single characters for CJK, which has no spaces.
"""

from __future__ import annotations

import re

from cotforge.parsing import split_sample

# Han (CJK unified, extension A, compatibility), kana, hangul: scripts written without spaces.
CJK_CLASS = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u1100-\u11ff"
_CJK_CHAR = re.compile(f"[{CJK_CLASS}]")
# A token: one CJK character, or a run of other word characters.
_TOKEN = re.compile(f"[{CJK_CLASS}]|[^\\W{CJK_CLASS}]+")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)[^\n]*\n.*?(?:^[ \t]{0,3}\1[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)

_MATH = re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]|\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.DOTALL)

CODE_DOMAINS = ("code", "coding", "programming")


def reasoning_and_summary(sample: dict) -> tuple[str, str]:
    """The sample's reasoning and summary: the parsed fields when present, else parsed from `completion`."""
    reasoning, summary = sample.get("reasoning"), sample.get("summary")
    if reasoning is None and summary is None:
        parsed = split_sample(sample)
        return parsed.reasoning, parsed.summary
    return reasoning or "", summary or ""


def is_code_domain(sample: dict, code_domains: tuple | list = CODE_DOMAINS) -> bool:
    return (sample.get("domain") or "").strip().lower() in code_domains or sample.get("answer_type") == "code"


def tokens(text: str) -> list[str]:
    """Words for spaced scripts, single characters for CJK (so n-grams work for Chinese too)."""
    return _TOKEN.findall(text)


def cjk_count(text: str) -> int:
    return len(_CJK_CHAR.findall(text))


def strip_fenced_code(text: str) -> str:
    return _FENCE.sub("\n", text)


def strip_display_math(text: str) -> str:
    """Remove $$...$$, \\[...\\] and LaTeX environments (often indented, never code)."""
    return _MATH.sub(" ", text)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block, in order; an unclosed fence runs to the end."""
    blocks = []
    for match in _FENCE.finditer(text):
        first, _, rest = match.group(0).partition("\n")
        info = first.strip().lstrip("`~").strip()
        body = re.sub(r"\n?[ \t]{0,3}(```|~~~)[ \t]*$", "", rest)
        blocks.append((info, body))
    return blocks
