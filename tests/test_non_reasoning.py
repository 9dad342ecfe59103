"""recipes/r1-non-reasoning.yaml end to end on CPU at tiny sizes: the embedded SmolLM2-135M answers
(a CoT first only where the auto-cot rule asks), the embedded model judges the answers for helpfulness
(filters/non-reasoning.yaml), and the accepted rows feed `cotforge mix` as non-reasoning sources."""

from __future__ import annotations

import json
import os

import pytest
from conftest import REPO

PROMPTS = [
    {"id": "hello", "prompt": "hello", "domain": "chat", "language": "en"},
    {"id": "poem", "prompt": "Write a short poem about the sea.", "domain": "writing", "language": "en"},
    {"id": "capital", "prompt": "What is the capital of France?", "gold": "Paris", "domain": "factual_qa",
     "language": "en"},
]


@pytest.mark.slow
def test_non_reasoning_recipe_judge_and_mix(cli, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in PROMPTS))
    env = {**os.environ, "COTFORGE_CACHE": str(tmp_path / "cache")}  # the judge's verdict cache
    run = tmp_path / "non-reasoning"
    cli("generate", prompts, "--recipe", REPO / "recipes" / "r1-non-reasoning.yaml", "--out", run,
        "--max-tokens", "24", "--max-rounds", "1", "--jobs", "1", env=env, check=True, timeout=1500)
    rows = json.loads(cli("query", run, "SELECT id, prompt_id, reasoning, accepted, "
                          "list_filter(verdicts, lambda v: v.check = 'judge')[1].reason AS judge, "
                          "list_filter(verdicts, lambda v: NOT v.passed AND v.check != 'judge') = [] AS rules_ok "
                          "FROM samples ORDER BY id", "--format", "json", check=True).stdout)
    assert {row["prompt_id"] for row in rows} == {"hello", "poem", "capital"}
    for row in rows:
        if row["rules_ok"]:  # the judge answered (or failed to in format): counted either way
            assert row["judge"] in ("judged yes", "judged no") or row["judge"].startswith("unparsed")
        else:  # rules first: no judge call for a row the rules rejected
            assert row["judge"] == "n/a: rejected by rules"
        assert row["accepted"] == (row["rules_ok"] and row["judge"] == "judged yes")
    hello = next(row for row in rows if row["prompt_id"] == "hello")
    assert not hello["reasoning"]  # "hello" was not asked for a CoT
    # Verdicts go to the cache folder given, whenever the judge was asked at all: the 135M model's
    # 24-token answers can all fail the rules, and then rules-first means no judge call and no cache.
    cached = [json.loads(line) for path in (tmp_path / "cache" / "judge").glob("*.jsonl")
              for line in path.read_text().splitlines() if line.strip()]
    asked = sum(row["rules_ok"] for row in rows)
    assert (len(cached) > 0) == (asked > 0) and len(cached) <= asked  # identical answers share a key
    accepted = sum(row["accepted"] for row in rows)

    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"name: tiny\nseed: 0\nsources:\n  - name: non_reasoning\n    path: {run}\n"
                      "    quota: {writing: 10, factual_qa: 10, chat: 10}\n")
    report = cli("mix", recipe, "--out", tmp_path / "mix", check=True).stdout
    assert f"source non_reasoning: kept {accepted} " in report
