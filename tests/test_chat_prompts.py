"""Chat prompts (`messages`: system + user turns) keep their turns through filter, generate, mix and export."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from conftest import write_jsonl

from cotforge.engines.replay import ReplayEngine
from cotforge.generate import GenerateConfig, generate
from cotforge.mix import mix
from cotforge.query import run_query

SYSTEM = {"role": "system", "content": "You are a careful tutor. Answer in the language of the question."}
QUESTION_ZH = "一列火车中午从车站出发以每小时六十英里的速度驶向三百英里外的城市请问它什么时候到达"
TURNS = [SYSTEM, {"role": "user", "content": "What is 2 + 3? Reply with a boxed number."}]
CHAT_ZH = [SYSTEM, {"role": "user", "content": QUESTION_ZH}]
ANSWER = "<think>Two plus three is five.</think>\nThe answer is \\boxed{5}."


def _exported(folder: Path) -> list[dict]:
    return [row for shard in sorted((folder / "data").glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]


def _samples(run: Path) -> list[dict]:
    columns, rows = run_query(run, "SELECT id, prompt, messages FROM samples ORDER BY id")
    return [dict(zip(columns, row)) for row in rows]


def test_filter_and_export_keep_the_chat_turns(tmp_path: Path, cli) -> None:
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"id": "c1", "messages": TURNS, "completion": ANSWER, "gold": "5"}])
    cli("filter", samples, "--out", tmp_path / "run", "--checks", "format", check=True)
    [row] = _samples(tmp_path / "run")
    assert row["messages"] == TURNS  # a real list column, not JSON text
    assert row["prompt"] == TURNS[1]["content"]  # what text checks read: the user turn, never empty

    cli("export", tmp_path / "run", "--out", tmp_path / "chat", "--style", "messages", check=True)
    [record] = _exported(tmp_path / "chat")
    assert record["messages"][:2] == TURNS
    assert record["messages"][2]["role"] == "assistant" and "\\boxed{5}" in record["messages"][2]["content"]

    cli("export", tmp_path / "run", "--out", tmp_path / "text", "--style", "think", check=True)
    [record] = _exported(tmp_path / "text")
    assert record["prompt"] == TURNS[1]["content"]


def test_generated_chat_prompts_stay_turns_and_are_decontaminated(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "zh", "messages": CHAT_ZH, "gold": "5"},
                                                  {"id": "en", "messages": TURNS, "gold": "5"}])
    recorded = write_jsonl(tmp_path / "recorded.jsonl", [{"prompt_id": p, "prompt": "-", "sample_idx": 0,
                                                     "completion": ANSWER} for p in ("zh", "en")])
    generate(prompts, tmp_path / "run", GenerateConfig(engine="replay", checks="format", jobs=0, k=1),
             engine=ReplayEngine(recorded))
    rows = {row["id"]: row for row in _samples(tmp_path / "run")}
    assert rows["zh-0"]["messages"] == CHAT_ZH and rows["en-0"]["messages"] == TURNS
    assert rows["zh-0"]["prompt"] == QUESTION_ZH  # not the turns as escaped JSON text

    write_jsonl(tmp_path / "eval.jsonl", [{"question": QUESTION_ZH, "answer": "5 pm"}])
    (tmp_path / "recipe.yaml").write_text("name: chat\nseed: 0\nsources:\n  - name: gen\n    path: run\n"
                                          "decontaminate:\n  against: [eval.jsonl]\n  ngram: 13\n")
    mix(tmp_path / "recipe.yaml", tmp_path / "mix")
    _, mixed = run_query(tmp_path / "mix", "SELECT id, accepted, verdicts[-1].reason, messages FROM samples "
                                                 "ORDER BY id")
    reasons = {row[0]: row for row in mixed}
    assert not reasons["zh-0"][1] and "contaminated by eval" in reasons["zh-0"][2], reasons
    assert reasons["en-0"][1] and reasons["en-0"][3] == TURNS, reasons


def test_mixed_chat_rows_keep_their_prompt_turns_as_messages(tmp_path: Path, cli) -> None:
    conversation = [*TURNS, {"role": "assistant", "content": ANSWER}]
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": conversation}])
    (tmp_path / "recipe.yaml").write_text("name: chat\nseed: 0\nsources:\n  - name: chat\n    path: chat.jsonl\n")
    mix(tmp_path / "recipe.yaml", tmp_path / "mix")
    [row] = _samples(tmp_path / "mix")
    assert row["messages"] == TURNS and row["prompt"] == TURNS[1]["content"]
    cli("export", tmp_path / "mix", "--out", tmp_path / "chat-export", "--style", "messages", check=True)
    [record] = _exported(tmp_path / "chat-export")
    assert record["messages"][:2] == TURNS and "\\boxed{5}" in record["messages"][2]["content"]
