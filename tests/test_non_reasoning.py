"""recipes/r1-non-reasoning.yaml end to end at tiny sizes: answers (a CoT first only where the auto-cot
rule asks), the rules, then a judge for helpfulness (filters/non-reasoning.yaml), and the accepted rows
feeding `cotforge mix` as non-reasoning sources.

The decisive test replays recorded answers and asks a scripted judge whose verdicts are known (what a
135M model writes in 24 tokens cannot be predicted, so a test on it could only accept anything). The
smoke test runs the recipe as written, with the embedded SmolLM2-135M answering and judging.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml
from conftest import REPO, write_jsonl
from servers import ScriptedServer, chat_answer

from cotforge.parsing import SPECIAL_TOKEN

PROMPTS = [
    {"id": "hello", "prompt": "hello", "domain": "chat", "language": "en"},
    {"id": "poem", "prompt": "Write a short poem about the sea.", "domain": "writing", "language": "en"},
    {"id": "capital", "prompt": "What is the capital of France?", "gold": "Paris", "domain": "factual_qa",
     "language": "en"},
    {"id": "tides", "prompt": "Describe the tides.", "domain": "writing", "language": "en"},
]
RAMBLE = " ".join(f"The {i}th round is unlike the {i + 1}th, taller by {i} inches." for i in range(60))
RECORDED = {  # what the model "wrote": direct answers, one CoT, and one CoT the rules reject
    "hello": "Hello! How can I help you today?",
    "poem": f"{SPECIAL_TOKEN}A sea poem: short lines, salt and light.{SPECIAL_TOKEN}Rounds roll in,\n"
            "salt on the wind,\nthe grey sea sings.",
    "capital": "The capital of France is Paris.",
    "tides": f"{SPECIAL_TOKEN}{RAMBLE}{SPECIAL_TOKEN}The tides rise and fall twice a day.",  # > 2000-char paragraph
}


def scripted_judge(body: dict) -> tuple:
    """Yes when the reference is in the answer; by the rubric, Yes unless the answer is the poem."""
    text = body["messages"][-1]["content"]
    yes = "Paris" in text.split("Model's answer:")[-1] if "Reference answer:" in text else "grey sea" not in text
    return 200, {}, {**chat_answer(), "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": f"Looked at it.\nJudgement: {'Yes' if yes else 'No'}"}}]}


def judged_with(preset: dict, base_url: str) -> dict:
    """filters/non-reasoning.yaml with its judge on the scripted server instead of the embedded model."""
    checks = [dict(entry) for entry in preset["checks"]]
    judge = next(entry for entry in checks if entry["check"] == "judge")
    judge.pop("prefill")  # a chat judge answers the asked format itself
    judge.update(engine="openai", model="judge-m", engine_options={"base_url": base_url, "backoff_s": 0.01})
    return {"checks": checks}


def query_rows(cli, run) -> list[dict]:
    return json.loads(cli("query", run, "SELECT id, prompt_id, reasoning, accepted, "
                          "list_filter(verdicts, lambda v: v.check = 'judge')[1].reason AS judge, "
                          "list_filter(verdicts, lambda v: NOT v.passed AND v.check != 'judge') = [] AS rules_ok "
                          "FROM samples ORDER BY id", "--format", "json", check=True).stdout)


def mix_report(cli, run, tmp_path) -> str:
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"name: tiny\nseed: 0\nsources:\n  - name: non_reasoning\n    path: {run}\n"
                      "    quota: {writing: 10, factual_qa: 10, chat: 10}\n")
    return cli("mix", recipe, "--out", tmp_path / "mix", check=True).stdout


def test_non_reasoning_recipe_rules_first_then_the_judge_then_mix(cli, tmp_path, monkeypatch):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    recorded = write_jsonl(tmp_path / "recorded.jsonl", [{"prompt_id": key, "sample_idx": 0, "completion": text}
                                                         for key, text in RECORDED.items()])
    preset = yaml.safe_load((REPO / "filters" / "non-reasoning.yaml").read_text())
    monkeypatch.setenv("COTFORGE_CACHE", str(tmp_path / "cache"))  # the judge's verdict cache
    run = tmp_path / "non-reasoning"
    with ScriptedServer([scripted_judge]) as server:
        checks = tmp_path / "checks.yaml"
        checks.write_text(yaml.safe_dump(judged_with(preset, server.base_url)))
        # The shipped recipe, its engine (the embedded model, batch_size 9) swapped for the recorded answers.
        recipe = yaml.safe_load((REPO / "recipes" / "r1-non-reasoning.yaml").read_text())
        recipe.update(engine={"name": "replay", "model": str(recorded)}, checks=str(checks), max_rounds=1)
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        cli("generate", prompts, "--recipe", tmp_path / "recipe.yaml", "--out", run, "--jobs", "0", check=True)
        asked = [body["messages"][-1]["content"] for _, _, body in server.received]
    rows = {row["prompt_id"]: row for row in query_rows(cli, run)}
    assert sorted(rows) == ["capital", "hello", "poem", "tides"]
    assert {key: row["judge"] for key, row in rows.items()} == {
        "hello": "judged yes", "poem": "judged no", "capital": "judged yes", "tides": "n/a: rejected by rules"}
    assert {key: row["accepted"] for key, row in rows.items()} == {
        "hello": True, "poem": False, "capital": True, "tides": False}
    assert not rows["tides"]["rules_ok"] and all(rows[key]["rules_ok"] for key in ("hello", "poem", "capital"))
    assert not rows["hello"]["reasoning"] and not rows["capital"]["reasoning"]  # not asked for a CoT
    assert rows["poem"]["reasoning"] == "A sea poem: short lines, salt and light."
    # Rules first: the judge was asked about the three rows the rules kept, once each, about the summary.
    assert len(asked) == 3 and not any("round is unlike" in text for text in asked)
    assert sum("Reference answer:\nParis" in text for text in asked) == 1
    assert not any("A sea poem" in text for text in asked)  # scope: summary
    cached = [json.loads(line) for path in (tmp_path / "cache" / "judge").glob("*.jsonl")
              for line in path.read_text().splitlines() if line.strip()]
    assert len(cached) == 3
    assert "source non_reasoning: kept 2 " in mix_report(cli, run, tmp_path)


@pytest.mark.model  # the embedded model answers and judges
def test_smoke_the_recipe_as_written_runs_on_the_embedded_model(cli, tmp_path):
    """Smoke test: the shipped recipe runs end to end on CPU with the real model (generation, the rules,
    the prefilled judge, mix). It checks the run's shape, not what the 135M model says."""
    from cotforge.engines.convert import cache_root

    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:3])
    # A judge verdict cache of its own (nothing judged before), beside the models the whole session
    # shares: the GGUF is de-quantized once per session (~25 s), not again here.
    models = cache_root() / "models"
    models.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(models, target_is_directory=True)
    env = {**os.environ, "COTFORGE_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "non-reasoning"
    cli("generate", prompts, "--recipe", REPO / "recipes" / "r1-non-reasoning.yaml", "--out", run,
        "--max-tokens", "24", "--max-rounds", "1", "--jobs", "1", env=env, check=True, timeout=1500)
    rows = query_rows(cli, run)
    assert {row["prompt_id"] for row in rows} == {"hello", "poem", "capital"}
    for row in rows:
        if row["rules_ok"]:  # the judge was asked: a verdict, or an answer out of format (which fails)
            assert row["judge"] in ("judged yes", "judged no") or row["judge"].startswith("unparsed")
        else:
            assert row["judge"] == "n/a: rejected by rules"
        assert row["accepted"] == (row["rules_ok"] and row["judge"] == "judged yes")
    assert not next(row for row in rows if row["prompt_id"] == "hello")["reasoning"]
    accepted = sum(row["accepted"] for row in rows)
    assert f"source non_reasoning: kept {accepted} " in mix_report(cli, run, tmp_path)
