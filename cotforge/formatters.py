"""Formatters: a sample -> a training record. Pure functions, no I/O.

Styles (each renders the assistant side; `cotforge.parsing.split_completion` reads every one back):
- `special-token`: R1's readable SFT pattern `|special_token|reasoning|special_token|summary`
  (the token is configurable);
- `think`: `<think>\\nreasoning\\n</think>\\n\\nsummary`, the R1 / R1-distill chat output;
- `r1-zero`: `<think>\\nreasoning\\n</think>\\n<answer>\\nsummary\\n</answer>` (R1-Zero's template);
- `messages`: TRL's conversational format, `[{user turns...}, {"role": "assistant", ...}]` with the
  assistant content in the `think` style, or, with `reasoning_field=True`, the summary as content and
  the reasoning in a separate `reasoning_content` field.

Non-reasoning samples (empty reasoning: writing, QA, translation, self-cognition) render as the bare
summary, without an empty think block, unless `empty_think=True` asks for one (some chat templates
always open `<think>`).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from cotforge.parsing import SPECIAL_TOKEN

STYLES = ("messages", "special-token", "think", "r1-zero")
TEXT_STYLES = ("special-token", "think", "r1-zero")


def _parts(sample: dict) -> tuple[str, str]:
    return (sample.get("reasoning") or "").strip(), (sample.get("summary") or "").strip()


def special_token(sample: dict, token: str = SPECIAL_TOKEN, empty_think: bool = False) -> str:
    """`|special_token|reasoning|special_token|summary`."""
    reasoning, summary = _parts(sample)
    if not reasoning and not empty_think:
        return summary
    return f"{token}{reasoning}{token}{summary}"


def think(sample: dict, empty_think: bool = False) -> str:
    """`<think>\\nreasoning\\n</think>\\n\\nsummary`."""
    reasoning, summary = _parts(sample)
    if not reasoning and not empty_think:
        return summary
    return f"<think>\n{reasoning}\n</think>\n\n{summary}"


def r1_zero(sample: dict, empty_think: bool = False) -> str:
    """`<think>\\nreasoning\\n</think>\\n<answer>\\nsummary\\n</answer>`."""
    reasoning, summary = _parts(sample)
    answer = f"<answer>\n{summary}\n</answer>"
    if not reasoning and not empty_think:
        return answer
    return f"<think>\n{reasoning}\n</think>\n{answer}"


def prompt_turns(sample: dict) -> list[dict]:
    """The user side: the prompt's own chat turns when it has them, else one user turn."""
    turns = sample.get("messages")
    if not turns and sample.get("metadata"):
        try:
            turns = json.loads(sample["metadata"]).get("prompt_messages")
        except (ValueError, AttributeError):
            turns = None
    if turns:
        return [{"role": t["role"], "content": t["content"]} for t in turns]
    return [{"role": "user", "content": sample.get("prompt") or ""}]


def messages(sample: dict, reasoning_field: bool = False, empty_think: bool = False,
             system: str | None = None) -> list[dict]:
    """TRL conversational record: prompt turns + one assistant turn."""
    turns = prompt_turns(sample)
    if system and turns[0]["role"] != "system":
        turns = [{"role": "system", "content": system}, *turns]
    if reasoning_field:
        reasoning, summary = _parts(sample)
        turns = [{**t, "reasoning_content": None} for t in turns]
        return [*turns, {"role": "assistant", "content": summary, "reasoning_content": reasoning or None}]
    return [*turns, {"role": "assistant", "content": think(sample, empty_think)}]


TEXT_FORMATTERS: dict[str, Callable[..., str]] = {"special-token": special_token, "think": think,
                                                  "r1-zero": r1_zero}


def format_sample(sample: dict, style: str, **options) -> dict:
    """The style's column(s) for one sample: `{"messages": [...]}` or `{"text": "..."}`."""
    if style == "messages":
        return {"messages": messages(sample, **options)}
    if style not in TEXT_FORMATTERS:
        raise ValueError(f"unknown style {style!r} (one of {', '.join(STYLES)})")
    return {"text": TEXT_FORMATTERS[style](sample, **options)}
