"""`auto-cot`: which non-reasoning prompts get a chain of thought before the answer (R1 section 2.3.3).

R1's non-reasoning data (writing, factual QA, self-cognition, translation) had DeepSeek-V3 "generate a
potential chain-of-thought before answering the question by prompting", except for "simpler queries,
such as 'hello'". cotforge's rule, cheap and deterministic (no model call, so the same prompts always
route the same way, and a resumed run routes as the first one did):

  a prompt gets a CoT when it asks for something composed or explained (a word from `COT_WORDS`:
  write, explain, compare, plan, ...) or is long (at least `LONG_WORDS` words, or `LONG_CHARS`
  characters for scripts without spaces); anything else (greetings, short factual questions, short
  phrases to translate) is answered directly.

A CoT prompt asks for `|special_token|thoughts|special_token|answer`; a direct one is the plain chat turn.
"""

from __future__ import annotations

import re

from cotforge.parsing import SPECIAL_TOKEN

AUTO_COT = "auto-cot"
COT_WORDS = frozenset({
    "write", "compose", "draft", "essay", "story", "poem", "letter", "explain", "why", "how", "compare",
    "contrast", "describe", "summarize", "summarise", "plan", "design", "argue", "analyse", "analyze",
    "evaluate", "outline", "steps", "pros", "cons",
})
LONG_WORDS = 20
LONG_CHARS = 40  # CJK and other scripts without spaces between words (~25 English words)
COT_TEXT = (
    "{prompt}\n\nBefore you answer, think it through briefly. Write it in exactly this layout:\n"
    f"{SPECIAL_TOKEN}your thoughts{SPECIAL_TOKEN}your answer"
)


def wants_cot(text: str) -> bool:
    words = re.findall(r"\w+", text.lower())
    if any(word in COT_WORDS for word in words):
        return True
    spaced = len(words) >= LONG_WORDS
    unspaced = len(text.strip()) >= LONG_CHARS and " " not in text.strip()
    return spaced or unspaced


def auto_cot_messages(text: str, messages: list[dict] | None) -> list[dict]:
    if not wants_cot(text):
        return list(messages) if messages else [{"role": "user", "content": text}]
    asked = COT_TEXT.replace("{prompt}", text.strip())
    if messages:  # keep a system turn and earlier turns; the last user turn carries the instruction
        last = max(i for i, turn in enumerate(messages) if turn["role"] == "user")
        return [*messages[:last], {"role": "user", "content": COT_TEXT.replace("{prompt}", messages[last]["content"])},
                *messages[last + 1:]]
    return [{"role": "user", "content": asked}]
