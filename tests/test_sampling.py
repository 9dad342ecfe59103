"""Rounds, adaptive allocation and resume of `cotforge generate` (replay engine: no model needed)."""

from __future__ import annotations

import json

import pytest

from cotforge.engines.replay import ReplayEngine
from cotforge.generate import GenerateConfig, generate
from cotforge.generate.allocation import PromptState, next_round
from cotforge.query import run_query

GOOD = "<think>add them</think> The answer is {n}."
BAD = "<think>I keep thinking"


@pytest.fixture
def recorded(tmp_path):
    """5 prompts; prompt i's first good completion is at sample index i % 4 (p4 none among 4)."""
    prompts, samples = tmp_path / "prompts.jsonl", tmp_path / "recorded.jsonl"
    with open(prompts, "w") as p, open(samples, "w") as s:
        for i in range(5):
            p.write(json.dumps({"id": f"p{i}", "prompt": f"What is {i} + {i}?", "gold": str(2 * i)}) + "\n")
            for j in range(6):
                good = i < 4 and j >= i
                s.write(json.dumps({"prompt_id": f"p{i}", "prompt": f"What is {i} + {i}?", "sample_idx": j,
                                    "completion": GOOD.format(n=2 * i) if good else BAD}) + "\n")
    return prompts, samples


def config(**kw):
    return GenerateConfig(engine="replay", checks="format", jobs=0, **kw)


def test_next_round_adaptive_and_fixed():
    cfg = GenerateConfig(k=2, accept=1, max_rounds=3, budget=20, max_per_round=10)
    assert next_round(PromptState(), cfg) == 2  # first round: k
    assert next_round(PromptState(2, 1, 1), cfg) == 0  # reached accept
    failed_twice, failed_four = next_round(PromptState(2, 0, 1), cfg), next_round(PromptState(4, 0, 1), cfg)
    # more failures -> a lower pass-rate estimate -> more samples at once, within the cap
    assert cfg.round_cap >= failed_four > failed_twice >= 1
    assert next_round(PromptState(4, 0, 2), cfg) > failed_four  # fewer rounds left: more of the need now
    assert next_round(PromptState(19, 0, 1), cfg) == 1  # what is left of the budget
    assert next_round(PromptState(20, 0, 1), cfg) == 0  # budget spent
    assert next_round(PromptState(4, 0, 3), cfg) == 0  # rounds spent
    fixed = GenerateConfig(k=2, accept=1, max_rounds=3, budget=20, adaptive=False)
    assert next_round(PromptState(4, 0, 1), fixed) == next_round(PromptState(2, 0, 1), fixed) == 2


def test_rounds_stop_each_prompt_at_accept(recorded, tmp_path):
    prompts, samples = recorded
    summary = generate(prompts, tmp_path / "run", config(k=1, max_rounds=4, adaptive=False),
                       engine=ReplayEngine(samples))
    _, rows = run_query(tmp_path / "run", "SELECT prompt_id, count(*), max(round), count(*) FILTER (WHERE accepted) "
                                          "FROM samples GROUP BY prompt_id ORDER BY prompt_id")
    assert rows == [("p0", 1, 0, 1), ("p1", 2, 1, 1), ("p2", 3, 2, 1), ("p3", 4, 3, 1), ("p4", 4, 3, 0)]
    assert summary["prompts_done"] == 4 and summary["samples"] == 14
    _, stats = run_query(tmp_path / "run", "SELECT id, samples, accepted FROM prompts ORDER BY id")
    assert stats[0] == ("p0", 1, 1) and stats[4] == ("p4", 4, 0)


def test_adaptive_spends_no_more_than_fixed_k(recorded, tmp_path):
    prompts, samples = recorded
    fixed = generate(prompts, tmp_path / "fixed", config(k=4, max_rounds=1), engine=ReplayEngine(samples))
    adaptive = generate(prompts, tmp_path / "adaptive", config(k=1, max_rounds=4, budget=4),
                        engine=ReplayEngine(samples))
    assert adaptive["prompts_done"] == fixed["prompts_done"] == 4
    assert adaptive["completion_tokens"] < fixed["completion_tokens"]


class CrashingEngine(ReplayEngine):
    def __init__(self, model, crash_after):
        super().__init__(model)
        self.calls, self.crash_after = 0, crash_after

    def generate(self, requests, params):
        self.calls += 1
        if self.calls > self.crash_after:
            raise KeyboardInterrupt  # what Ctrl-C looks like inside the engine call
        return super().generate(requests, params)


def test_interrupted_run_resumes_to_the_same_result(recorded, tmp_path):
    prompts, samples = recorded
    cfg = config(k=2, max_rounds=3, shard_size=2)
    reference = generate(prompts, tmp_path / "ref", cfg, engine=ReplayEngine(samples))
    with pytest.raises(KeyboardInterrupt):
        generate(prompts, tmp_path / "run", cfg, engine=CrashingEngine(samples, crash_after=1))
    _, partial = run_query(tmp_path / "run", "SELECT id, completion FROM samples")
    assert 0 < len(partial) < reference["samples"]
    resumed = generate(prompts, tmp_path / "run", cfg, engine=ReplayEngine(samples))
    query = "SELECT id, completion, accepted FROM samples ORDER BY id"
    assert run_query(tmp_path / "run", query) == run_query(tmp_path / "ref", query)
    _, after = run_query(tmp_path / "run", "SELECT id, completion FROM samples")
    assert set(partial) <= set(after)
    assert resumed["samples"] == reference["samples"]


def test_changed_config_is_refused(recorded, tmp_path, cli):
    prompts, samples = recorded
    generate(prompts, tmp_path / "run", config(k=1), engine=ReplayEngine(samples))
    result = cli("generate", prompts, "--out", tmp_path / "run", "--engine", "replay", "--model", samples,
                 "--checks", "format", "--k", "2")
    assert result.returncode == 1 and "another configuration" in result.stderr and "k 1 -> 2" in result.stderr


def test_overwrite_discards_the_old_run(recorded, tmp_path):
    prompts, samples = recorded
    generate(prompts, tmp_path / "run", config(k=1, max_rounds=2), engine=ReplayEngine(samples))
    summary = generate(prompts, tmp_path / "run", config(k=2, max_rounds=1), engine=ReplayEngine(samples),
                       overwrite=True)
    assert summary["samples"] == 10  # 5 prompts x k=2, one round: nothing of the old run survives
    _, rows = run_query(tmp_path / "run", "SELECT count(*), max(round), max(sample_idx) FROM samples")
    assert rows == [(10, 0, 1)]
