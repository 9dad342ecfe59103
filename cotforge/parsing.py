"""One parser that splits a raw completion into reasoning and summary.

Understood layouts:
- `<think>reasoning</think> summary` (R1, R1-distill; a completion may start inside an opened
  `<think>` that the chat template pre-filled, so a bare `... </think> summary` is accepted too);
- R1-Zero: `<think>reasoning</think> <answer>final</answer>`: the summary is the answer's content;
- the readable SFT pattern `|special_token|reasoning|special_token|summary`;
- anything else is plain text: no reasoning, the whole text is the summary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SPECIAL_TOKEN = "|special_token|"

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)


@dataclass(frozen=True)
class Parsed:
    reasoning: str
    summary: str
    style: str  # think | r1-zero | special-token | plain | unclosed
    closed: bool  # False when a reasoning block was opened and never closed (truncated)
    answer_tag: str | None = None  # content of <answer>...</answer>, when present


def opens_think(prompt) -> bool:
    """Does the prompt end inside an opened `<think>` (R1-Zero's template, a pre-filled chat turn)?
    Then the completion starts in the reasoning, and without `</think>` it has no summary at all."""
    if isinstance(prompt, list) and prompt:  # chat turns: the last one
        prompt = prompt[-1].get("content") if isinstance(prompt[-1], dict) else None
    return isinstance(prompt, str) and prompt.rstrip().endswith(_THINK_OPEN)


def split_sample(sample: dict, special_token: str = SPECIAL_TOKEN) -> Parsed:
    """`split_completion` of a sample's completion, knowing whether its prompt opened `<think>`
    (`think_opened`, set by generate from the prompt it sent, or a stored prompt ending in `<think>`)."""
    opened = bool(sample.get("think_opened")) or opens_think(sample.get("prompt")) or opens_think(sample.get("messages"))
    return split_completion(sample.get("completion") or "", special_token, opened=opened)


def split_completion(text: str, special_token: str = SPECIAL_TOKEN, opened: bool = False) -> Parsed:
    """Split `text` into reasoning and summary; never raises.

    `opened`: the prompt ended inside `<think>`, so text without `</think>` is reasoning cut short."""
    if text is None:
        return Parsed("", "", "plain", True)
    stripped = text.strip()
    if special_token and stripped.startswith(special_token):
        rest = stripped[len(special_token):]
        cut = rest.find(special_token)
        if cut < 0:
            return Parsed(rest.strip(), "", "unclosed", False)
        return Parsed(rest[:cut].strip(), rest[cut + len(special_token):].strip(), "special-token", True)

    close = text.find(_THINK_CLOSE)
    open_at = text.find(_THINK_OPEN)
    if close < 0:
        if open_at >= 0:
            return Parsed(text[open_at + len(_THINK_OPEN):].strip(), "", "unclosed", False)
        if opened:
            return Parsed(stripped, "", "unclosed", False)
        return Parsed("", stripped, "plain", True)
    start = open_at + len(_THINK_OPEN) if 0 <= open_at < close else 0
    reasoning = text[start:close].strip()
    after = text[close + len(_THINK_CLOSE):]
    match = _ANSWER_RE.search(after)
    if match:
        answer = match.group(1).strip()
        return Parsed(reasoning, answer, "r1-zero", True, answer_tag=answer)
    return Parsed(reasoning, after.strip(), "think", True)
