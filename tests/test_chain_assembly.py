"""One chain assembly (`checks.chain.Chain`): rules in the pool, judges batched, then the gate, built the
same way by filter, generate and the rewards.

The judge runs for real against `ScriptedServer` (a stdlib HTTP server answering like a judge model: a
135M model cannot judge reliably, so the verdicts must be known); generate replays recorded
completions (`engines.replay`), so its verdicts can be compared row by row with filter's.
"""

from __future__ import annotations

import json
import re

from servers import ScriptedServer, chat_answer

from cotforge.train import rewards
from cotforge.checks.base import JUDGED, NOT_MATH
from cotforge.checks.chain import Chain
from cotforge.engines.replay import ReplayEngine
from cotforge.filtering import filter_samples
from cotforge.generate import GenerateConfig, generate
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import RawRow
from cotforge.io.rundir import RunDir
from cotforge.query import run_query


def judge_script(body: dict) -> tuple:
    """Yes when the reference (or, for a rubric, 'hello') is in the answer."""
    text = body["messages"][-1]["content"]
    reference = re.search(r"Reference answer:\n(.*?)\n\n", text, re.DOTALL)
    prediction = re.search(r"(?:Model's answer|Response):\n(.*?)\n\nDoes", text, re.DOTALL).group(1)
    wanted = reference.group(1) if reference else "hello"
    answer = f"Judgement: {'Yes' if wanted.lower() in prediction.lower() else 'No'}"
    return 200, {}, {**chat_answer(), "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                                   "finish_reason": "stop"}]}


def preset(server) -> list[dict]:
    return [{"check": "format"}, {"check": "answer"},
            {"check": "judge", "engine": "openai", "model": "judge-m", "cache": False, "rubric": "helpfulness",
             "engine_options": {"base_url": server.base_url, "backoff_s": 0.01, "api_key": "sk-secret"}}]


ROWS = [
    {"id": "math", "prompt_id": "p-math", "prompt": "2+3?", "gold": "5",
     "completion": "<think>2 plus 3</think> The answer is 5."},
    {"id": "math-wrong", "prompt_id": "p-math", "prompt": "2+3?", "gold": "5",
     "completion": "<think>2 plus 3</think> The answer is 6."},
    {"id": "capital", "prompt_id": "p-capital", "prompt": "Capital of France?", "gold": "Paris",
     "answer_type": "text", "completion": "<think>France</think> It is Paris, on the Seine."},
    {"id": "capital-wrong", "prompt_id": "p-capital", "prompt": "Capital of France?", "gold": "Paris",
     "answer_type": "text", "completion": "<think>France</think> It is Lyon."},
    {"id": "greet", "prompt_id": "p-greet", "prompt": "Greet me",
     "completion": "<think>a greeting</think> hello friend"},
    {"id": "greet-rude", "prompt_id": "p-greet", "prompt": "Greet me", "completion": "<think>no</think> go away"},
]


def normalized(rows: list[dict]) -> list[dict]:
    """The sample dicts filter builds from input rows (reasoning and summary split out)."""
    normalize = Normalizer("sample")
    return [normalize(RawRow("rows", line, dict(row))) for line, row in enumerate(rows, 1)]


def test_rules_then_judges_then_the_gate_in_one_chain():
    with ScriptedServer([judge_script]) as server, Chain.for_data(preset(server), jobs=0) as chain:
        assert chain.names == ["format", "answer", "judge", "verified"]
        assert chain.judges and chain.gate and chain.jobs == 0  # no pool needed at jobs=0
        results = chain.run(normalized(ROWS))
        config = chain.config()
    by_id = {row["id"]: result for row, result in zip(ROWS, results)}
    assert [by_id[i].accepted for i in ("math", "math-wrong", "capital", "capital-wrong", "greet", "greet-rude")]\
        == [True, False, True, False, True, False]
    # the judge verifies what no rule could: a greeting without a gold is judged, not unverified
    assert by_id["greet"].verdicts[3].code == JUDGED and "judge" in by_id["greet"].verdicts[3].reason
    # a gold in words is not the answer check's to grade (n/a): the judge's yes verifies the sample
    assert by_id["capital"].verdicts[1].code == NOT_MATH and by_id["capital"].verdicts[2].score == 1.0
    assert by_id["capital"].verdicts[3].reason == "judged by judge"
    assert [entry["check"] for entry in config] == ["format", "answer", "judge", "verified"]
    assert "api_key" not in json.dumps(config)  # the judge's secret never reaches a manifest


def test_filter_and_generate_give_the_same_verdicts_as_the_chain(tmp_path):
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text("".join(json.dumps({**row, "sample_idx": k}) + "\n" for k, row in enumerate(ROWS)))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": pid, "prompt": row["prompt"], "gold": row.get("gold"),
                                           "answer_type": row.get("answer_type")}) + "\n"
                               for pid, row in {r["prompt_id"]: r for r in ROWS}.items()))
    with ScriptedServer([judge_script]) as server:
        checks = preset(server)
        with Chain.for_data(checks, jobs=0) as chain:
            expected = {row["id"]: [v.record(name) for name, v in zip(chain.names, result.verdicts)]
                        for row, result in zip(ROWS, chain.run(normalized(ROWS)))}
            config = chain.config()
        filter_samples([recorded], tmp_path / "filtered", checks=checks, jobs=0)
        # generate: every recorded completion of each prompt, in one round (k = its count)
        generate(prompts, tmp_path / "generated", GenerateConfig(engine="replay", k=2, accept=2, max_rounds=1,
                                                                 checks=checks, jobs=0),
                 engine=ReplayEngine(recorded))
    assert RunDir(tmp_path / "filtered").manifest()["config"]["checks"] == config
    for run in ("filtered", "generated"):
        _, rows = run_query(tmp_path / run, "SELECT prompt_id, sample_idx, verdicts FROM samples")
        assert len(rows) == len(ROWS)
        by_key = {(r["prompt_id"], k): r["id"] for r, k in zip(ROWS, range(len(ROWS)))}
        if run == "generated":  # generate numbers samples per prompt: map them back to the recorded rows
            per_prompt: dict = {}
            for row in ROWS:
                per_prompt.setdefault(row["prompt_id"], []).append(row["id"])
            by_key = {(pid, k): ids[k] for pid, ids in per_prompt.items() for k in range(len(ids))}
        for prompt_id, sample_idx, verdicts in rows:
            assert verdicts == expected[by_key[(prompt_id, sample_idx)]], (run, prompt_id, sample_idx)


def test_rewards_are_the_chains_verdicts():
    samples = [dict(row) for row in ROWS]
    with ScriptedServer([judge_script]) as server:
        judge_options = {k: v for k, v in preset(server)[2].items() if k != "check"}
        with Chain.from_spec("answer", jobs=0) as answer, Chain.from_spec([preset(server)[2]], jobs=0) as judge:
            results = [(a.verdicts[0], j.verdicts[0]) for a, j in
                       zip(answer.run(normalized(samples)), judge.run(normalized(samples)))]
        columns = {"prompts": [s["prompt"] for s in samples], "completions": [s["completion"] for s in samples],
                   "gold": [s.get("gold") for s in samples], "answer_type": [s.get("answer_type") for s in samples]}
        judge_scores = rewards.get("judge", **judge_options)(**columns)
    assert rewards.accuracy(**columns) == [a.score for a, _ in results]
    assert judge_scores == [j.score for _, j in results]
    assert judge_scores == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
