"""Cold-start and non-reasoning templates: few-shot exemplars, reflect, and the auto-cot rule."""

from __future__ import annotations

import json

import pytest

from cotforge.generate.coldstart import DEFAULT_EXEMPLARS
from cotforge.generate.recipe import load_generate_recipe
from cotforge.generate.routing import wants_cot
from cotforge.generate.templates import render_request
from cotforge.errors import CotforgeError
from cotforge.parsing import split_completion


def test_few_shot_puts_exemplars_as_turns_in_the_readable_pattern():
    messages, raw = render_request("few-shot", "What is 6 + 1?", None)
    exemplars = [json.loads(line) for line in DEFAULT_EXEMPLARS.read_text().splitlines()]
    assert raw is None and len(messages) == 2 * len(exemplars) + 1
    assert [m["role"] for m in messages] == ["user", "assistant"] * len(exemplars) + ["user"]
    assert messages[-1]["content"] == "What is 6 + 1?"
    for turn in messages[1:-1:2]:
        parsed = split_completion(turn["content"])
        assert parsed.style == "special-token" and parsed.reasoning and parsed.summary


def test_few_shot_file_from_a_recipe_and_bad_exemplars(tmp_path):
    (tmp_path / "ex.jsonl").write_text(json.dumps({"prompt": "q", "reasoning": "r", "summary": "s"}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("prompts: p.jsonl\nout: run\ntemplate: few-shot:ex.jsonl\n")
    options, _ = load_generate_recipe(recipe)
    messages, _ = render_request(options["template"], "hi", None)
    assert messages[1]["content"] == "|special_token|r|special_token|s"
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "q", "completion": "no reasoning here"}) + "\n")
    with pytest.raises(CotforgeError, match=r"bad.jsonl:1: field 'completion': an exemplar needs"):
        render_request(f"few-shot:{tmp_path / 'bad.jsonl'}", "hi", None)


def test_reflect_asks_for_reflection_and_verification():
    (turn,), raw = render_request("reflect", "What is 6 + 1?", None)
    assert raw is None and turn["content"].startswith("What is 6 + 1?")
    assert "reflect" in turn["content"] and "verify" in turn["content"] and "|special_token|" in turn["content"]


@pytest.mark.parametrize(("prompt", "cot"), [
    ("hello", False), ("Thanks a lot!", False), ("What is the capital of France?", False),
    ("Translate into French: good morning", False), ("Write a short poem about the sea.", True),
    ("Explain why the sky looks blue during the day.", True),
    ("I have a meeting tomorrow with my landlord about the rent and I need to know what to bring along", True),
    ("请详细介绍一下长城的历史以及它在中国古代防御体系中的作用和意义，还有它今天的保护情况如何", True),
])
def test_auto_cot_rule(prompt, cot):
    assert wants_cot(prompt) is cot
    (turn,), _ = render_request("auto-cot", prompt, None)
    assert ("|special_token|" in turn["content"]) is cot
    assert turn["content"].startswith(prompt)


def test_auto_cot_keeps_a_system_turn():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write a haiku."}]
    out, _ = render_request("auto-cot", None, messages)
    assert out[0] == messages[0] and out[1]["content"].startswith("Write a haiku.") and "|special_token|" in out[1]["content"]
