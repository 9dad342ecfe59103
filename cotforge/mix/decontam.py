"""Decontamination: n-gram overlap between a training prompt and evaluation prompts.

Text is lower-cased and cut into tokens: runs of letters/digits are words, and each CJK character
(Han, kana, Hangul) is a token of its own, so Chinese/Japanese text is compared by character
n-grams and everything else by word n-grams (the 13-gram rule of GPT-3 / the Llama reports).
An eval prompt shorter than n tokens (but at least `min_tokens`) is matched as a whole sequence.
The eval n-grams are held in memory as 64-bit hashes: the index grows with the eval sets, never
with the data being mixed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cotforge.checks.text import tokens as text_tokens
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import read_rows


def tokens(text: str) -> list[str]:
    """Lower-cased words, CJK characters one by one (the checks' tokenizer)."""
    return text_tokens((text or "").lower())


def _hash(gram: tuple[str, ...]) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(gram).encode(), digest_size=8).digest(), "little")


def ngram_hashes(words: list[str], n: int) -> set[int]:
    return {_hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1)}


def eval_prompt_text(row: dict) -> str:
    """An eval row's prompt: its prompt field, else its user turns."""
    if row.get("prompt"):
        return row["prompt"]
    return "\n".join(t["content"] for t in row.get("messages") or [] if t["role"] == "user")


class EvalIndex:
    """`match(prompt)` -> the eval file sharing an n-gram with it, or None."""

    def __init__(self, eval_files: dict[str, str | Path], n: int = 13, min_tokens: int = 6):
        """`eval_files`: label (as the recipe wrote it) -> path."""
        self.n = n
        self.grams: dict[int, str] = {}  # n-gram hash -> first eval label holding it
        self.short: dict[int, dict[int, str]] = {}  # length k < n -> hash of the whole prompt -> label
        self.prompts = 0
        normalize = Normalizer("prompt")
        for label, path in eval_files.items():
            for raw in read_rows(path):
                words = tokens(eval_prompt_text(normalize(raw)))
                self.prompts += 1
                if len(words) >= n:
                    for gram in ngram_hashes(words, n):
                        self.grams.setdefault(gram, label)
                elif len(words) >= min_tokens:
                    self.short.setdefault(len(words), {}).setdefault(_hash(tuple(words)), label)

    def match(self, prompt: str) -> str | None:
        words = tokens(prompt)
        if self.grams and len(words) >= self.n:
            for i in range(len(words) - self.n + 1):
                label = self.grams.get(_hash(tuple(words[i:i + self.n])))
                if label is not None:
                    return label
        for k, table in self.short.items():
            for i in range(len(words) - k + 1):
                label = table.get(_hash(tuple(words[i:i + k])))
                if label is not None:
                    return label
        return None
