"""A generate run killed during a prompt's last round, then the same command: the round's missing
samples are asked (same indices, same seeds), and no more than the round would have asked.

Found by tests/test_ray_vllm.py (k=2, --max-rounds 1, the driver SIGKILLed after the first sample of
a prompt landed): the restart counted rounds with a committed sample, so the cut round counted as
done and the rerun finished with a sample fewer than an undisturbed run. The kill is simulated by
removing the shard of that round's last sample (one sample a shard), as a kill before it landed.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from runcheck import assert_same_up_to_cancellation
from test_generate_at_scale import InstantEngine

from cotforge.generate import GenerateConfig
from cotforge.generate.scheduler import Scheduler

PROMPTS = 4
NEVER = 99  # accept above any prompt's budget


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i:02d}", "prompt": f"What is {i} + 1?"}) + "\n"
                            for i in range(PROMPTS)))
    return path


def run(prompts, out, config) -> InstantEngine:
    engine = InstantEngine()
    scheduler = Scheduler(prompts, out, config, engine=engine)
    try:
        scheduler.run_all()
    finally:
        scheduler.close()
    return engine


def committed(out) -> dict[str, tuple]:
    """id -> (shard, prompt id, sample index, round) of every committed sample."""
    rows = {}
    for shard in sorted((out / "samples").glob("part-*.parquet")):
        for row in pq.read_table(shard, columns=["id", "prompt_id", "sample_idx", "round"]).to_pylist():
            rows[row["id"]] = (shard, row["prompt_id"], row["sample_idx"], row["round"])
    return rows


# (policy, k, max rounds, budget): the only round of k (fixed, adaptive, and adaptive with a budget
# larger than k: the rerun must not ask up to the budget); a last round of several (fixed: k;
# adaptive: all the budget left).
CASES = [(False, 2, 1, None), (True, 2, 1, None), (True, 2, 1, 6), (False, 2, 3, None), (True, 3, 3, 8)]


@pytest.mark.parametrize(("adaptive", "k", "rounds", "budget"), CASES)
def test_a_kill_during_the_last_round_resumes_to_its_end(prompts, tmp_path, adaptive, k, rounds, budget):
    config = GenerateConfig(engine="instant", k=k, accept=NEVER, max_rounds=rounds, budget=budget,
                            adaptive=adaptive, checks="format", jobs=0, shard_size=1, shard_age_s=3600)
    # No prompt reaches accept, none is cancelled, every prompt spends
    # its whole plan, so the undisturbed run's samples are the exact reference.
    whole = tmp_path / "whole"
    run(prompts, whole, config)
    reference = committed(whole)
    last = rounds - 1
    victims = {}  # prompt -> its last-round sample of highest index, when another of that round stays
    for sample_id, (_, prompt_id, index, round_) in reference.items():
        siblings = [i for _, p, i, r in reference.values() if p == prompt_id and r == last]
        if round_ == last and len(siblings) >= 2 and index == max(siblings):
            victims[prompt_id] = sample_id
    assert victims, "no prompt reached its last round with two samples in it"

    out = tmp_path / "run"
    run(prompts, out, config)
    lost = sorted(victims.values())
    for sample_id in lost:  # the kill: these shards never landed
        committed(out)[sample_id][0].unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))

    engine = run(prompts, out, config)
    asked = sorted(f"{key}-{first + j}" for key, first, n in engine.asked for j in range(n))
    assert asked == lost  # exactly the cut samples, nothing more
    assert set(committed(out)) == set(reference)
    assert_same_up_to_cancellation(out, whole, accept=NEVER)
