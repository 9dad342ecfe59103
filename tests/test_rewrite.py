"""`cotforge rewrite`: R1-Zero-style outputs into the readable pattern, re-checked before they are kept.

The rewriting model is a scripted OpenAI-compatible server (tests/servers.py) whose rewrites are known:
one faithful, one that changes the answer, one that ignores the pattern; the checks that follow are the
real chain.
"""

from __future__ import annotations

import json

from conftest import write_jsonl
from servers import ScriptedServer, chat_answer

REWRITES = {
    "How many eggs are in 2 boxes of 6?": "|special_token|Two boxes of 6 eggs: 6 + 6 = 12. Check: 12 / 2 = 6."
                                          "|special_token|There are 12 eggs.",
    "What is 3 + 4?": "|special_token|3 + 4 = 8.|special_token|The answer is 8.",  # changed the answer
    "What is 10 / 2?": "<think>10 / 2 = 5</think> The answer is 5.",  # not the readable pattern
}


def scripted_rewriter(body: dict) -> tuple:
    text = body["messages"][-1]["content"]
    question = text.split("Question:\n", 1)[1].split("\n\nSolution:", 1)[0]
    answer = chat_answer()
    answer["choices"][0]["message"]["content"] = REWRITES[question]
    return 200, {}, answer


def test_rewrite_keeps_verified_rewrites_and_drops_the_rest_with_reasons(cli, tmp_path, monkeypatch):
    originals = [
        {"id": "eggs", "prompt": "How many eggs are in 2 boxes of 6?", "gold": "12",
         "completion": "<think>6 and 6 make 12 eggs 12</think> <answer>12</answer>"},
        {"id": "add", "prompt": "What is 3 + 4?", "gold": "7", "completion": "<think>3+4 is 7</think> <answer>7</answer>"},
        {"id": "div", "prompt": "What is 10 / 2?", "gold": "5", "completion": "<think>half of 10</think> <answer>5</answer>"},
        {"id": "wrong", "prompt": "What is 2 + 2?", "gold": "4", "completion": "<think>2+2</think> <answer>5</answer>"},
    ]
    samples = tmp_path / "zero.jsonl"
    write_jsonl(samples, originals)
    cli("filter", samples, "--out", tmp_path / "zero", "--checks", "answer", "--jobs", "1", check=True)
    with ScriptedServer([scripted_rewriter]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        args = ("rewrite", tmp_path / "zero", "--out", tmp_path / "readable", "--engine", "openai", "--model", "m")
        result = cli(*args, check=True)
        assert len(server.received) == 3  # the accepted originals only; "wrong" was rejected in RUN
        cli(*args, check=True)  # a rerun resumes: nothing asked again
        assert len(server.received) == 3
    assert "rows read 3: accepted 1, rejected 2" in result.stdout
    rows = json.loads(cli("query", tmp_path / "readable", "SELECT id, origin_id, accepted, summary, rewritten_by, "
                          "list_filter(verdicts, lambda v: NOT v.passed)[1].reason AS why FROM samples ORDER BY id",
                          "--format", "json", check=True).stdout)
    by_origin = {row["origin_id"]: row for row in rows}
    assert by_origin["eggs"]["accepted"] and by_origin["eggs"]["summary"] == "There are 12 eggs."
    assert by_origin["eggs"]["id"] == "eggs~rw" and by_origin["eggs"]["rewritten_by"] == "openai:m"
    assert not by_origin["add"]["accepted"] and by_origin["add"]["why"] == "answer 8 != gold 7 (number)"
    assert not by_origin["div"]["accepted"] and by_origin["div"]["why"].startswith("not in the readable pattern")
    exported = cli("export", tmp_path / "readable", "--out", tmp_path / "ds", "--style", "special-token", check=True)
    assert "exported 1 rows" in exported.stdout
