"""Formatters render a sample in each style; `split_completion` reads every style back."""

from __future__ import annotations

import json

import pytest

from cotforge.formatters import format_sample, messages, prompt_turns, r1_zero, special_token, think
from cotforge.parsing import split_completion

REASONING = "Let x = 2.\nThen 2x = 4."
SAMPLE = {"prompt": "What is 2x if x = 2?", "reasoning": REASONING, "summary": "**4**"}
PLAIN = {"prompt": "Write a haiku.", "reasoning": "", "summary": "Old pond\nfrog jumps in"}


@pytest.mark.parametrize("render, style", [(special_token, "special-token"), (think, "think"),
                                           (r1_zero, "r1-zero")])
def test_text_styles_round_trip(render, style) -> None:
    parsed = split_completion(render(SAMPLE))
    assert (parsed.reasoning, parsed.summary, parsed.style) == (REASONING, "**4**", style)


def test_special_token_is_r1_pattern_and_configurable() -> None:
    assert special_token(SAMPLE) == f"|special_token|{REASONING}|special_token|**4**"
    text = special_token(SAMPLE, token="<|sep|>")
    assert text.count("<|sep|>") == 2
    assert split_completion(text, special_token="<|sep|>").reasoning == REASONING


def test_non_reasoning_rows_have_no_empty_think_block() -> None:
    assert think(PLAIN) == PLAIN["summary"] == special_token(PLAIN)
    assert split_completion(think(PLAIN)).style == "plain"
    assert r1_zero(PLAIN) == f"<answer>\n{PLAIN['summary']}\n</answer>"
    forced = think(PLAIN, empty_think=True)
    assert forced.startswith("<think>\n\n</think>") and split_completion(forced).summary == PLAIN["summary"]


def test_messages_trl_conversational() -> None:
    turns = messages(SAMPLE)
    assert turns[0] == {"role": "user", "content": SAMPLE["prompt"]}
    assert turns[1]["role"] == "assistant"
    assert turns[1]["content"] == f"<think>\n{REASONING}\n</think>\n\n**4**"
    parsed = split_completion(turns[1]["content"])
    assert (parsed.reasoning, parsed.summary) == (REASONING, "**4**")
    separate = messages(SAMPLE, reasoning_field=True)
    assert separate[-1] == {"role": "assistant", "content": "**4**", "reasoning_content": REASONING}
    assert messages(PLAIN)[-1]["content"] == PLAIN["summary"]
    assert messages(SAMPLE, system="Be brief.")[0] == {"role": "system", "content": "Be brief."}


def test_prompt_messages_from_metadata_are_the_user_side() -> None:
    chat = [{"role": "system", "content": "You translate."}, {"role": "user", "content": "hello -> fr"}]
    sample = {**PLAIN, "prompt": "hello -> fr", "metadata": json.dumps({"prompt_messages": chat})}
    assert prompt_turns(sample) == chat
    assert [t["role"] for t in messages(sample)] == ["system", "user", "assistant"]


def test_format_sample_columns() -> None:
    assert set(format_sample(SAMPLE, "messages")) == {"messages"}
    assert format_sample(SAMPLE, "special-token", token="@@")["text"] == f"@@{REASONING}@@**4**"
    with pytest.raises(ValueError, match="unknown style"):
        format_sample(SAMPLE, "alpaca")
