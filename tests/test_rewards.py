"""Rewards: the same verdicts as the filter on the same samples, under TRL's calling convention."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl

from cotforge.train import rewards
from cotforge.checks import load_all
from cotforge.filtering import filter_samples
from cotforge.generate.templates import render
from cotforge.errors import CotforgeError

GOOD = "<think>\nTwo plus three is five; check: 5 - 3 = 2.\n</think>\n\nThe answer is $\\boxed{5}$."
ROWS = [
    {"prompt": "What is 2 + 3?", "gold": "5", "completion": GOOD},
    {"prompt": "What is 2 + 3?", "gold": "5", "completion": GOOD.replace("{5}", "{6}")},
    # R1-Zero: the prompt ended with "<think>", so the completion starts inside the reasoning.
    {"prompt": "What is 2 + 3?", "gold": "5", "completion": "2 and 3 make 5. </think> <answer>5</answer>"},
    {"prompt": "What is 2 + 3?", "gold": "5", "completion": "<think>\n2 and 3 make", "finish_reason": "length"},
    {"prompt": "Write a haiku about rain.", "completion": "Soft rain on the roof\nwhispers to the sleeping town\n"
                                                          "puddles hold the sky"},
    {"prompt": "2 加 3 等于多少？", "gold": "5", "language": "zh",
     "completion": "<think>\n二加三等于五。我们再检查一遍：五减三等于二。\n</think>\n\n答案是 5。"},
    {"prompt": "2 加 3 等于多少？", "gold": "5", "language": "zh",
     "completion": "<think>\nTwo plus three equals five, in English although the user wrote Chinese.\n</think>\n\n"
                   "答案是 5。"},
    {"prompt": "Count.", "completion": "<think>\n" + "one two three four five " * 60 + "\n</think>\n\nDone."},
    {"prompt": "Say hi.", "completion": "|special_token|The user greets me.|special_token|Hi!"},
    {"prompt": "Say hi.", "completion": "<think>\nThe user greets me.\n</think>\n\n"},
]
COLUMNS = ("gold", "language", "finish_reason")


def columns_of(rows: list[dict]) -> dict[str, list]:
    return {name: [row.get(name) for row in rows] for name in COLUMNS}


@pytest.fixture(scope="module")
def filtered(tmp_path_factory) -> tuple[list[str], list[dict]]:
    """Every registered check run by the real filter over ROWS: (check names, output rows in input order)."""
    names = sorted(load_all())
    folder = tmp_path_factory.mktemp("rewards")
    samples = folder / "samples.jsonl"
    write_jsonl(samples, ROWS)
    filter_samples([samples], folder / "run", checks=",".join(names), jobs=1)
    table = pq.read_table(folder / "run" / "samples")  # one shard: rows in input order
    return names, table.to_pylist()


def test_rewards_match_the_filter_check_by_check(filtered) -> None:
    names, rows = filtered
    assert [row["completion"] for row in rows] == [row["completion"] for row in ROWS]
    prompts = [row["prompt"] for row in ROWS]
    completions = [row["completion"] for row in ROWS]
    for index, name in enumerate(names):
        reward = rewards.from_check(name)
        scores = reward(prompts=prompts, completions=completions, **columns_of(ROWS))
        expected = [row["verdicts"][index]["score"] for row in rows]
        assert [row["verdicts"][index]["check"] for row in rows] == [name] * len(rows)
        assert scores == pytest.approx(expected, nan_ok=False), name
        assert [s is None for s in scores] == [e is None for e in expected], name


def test_named_rewards_match_their_checks(filtered) -> None:
    names, rows = filtered
    prompts = [row["prompt"] for row in ROWS]
    completions = [row["completion"] for row in ROWS]
    compared = 0
    for reward_name, check_name in rewards.NAMED.items():
        if check_name not in names:
            continue
        reward = getattr(rewards, reward_name)
        assert reward.__name__ == reward_name
        expected = [row["verdicts"][names.index(check_name)]["score"] for row in rows]
        assert reward(prompts=prompts, completions=completions, **columns_of(ROWS)) == expected
        compared += 1
    assert compared >= 2  # format and at least one more check have landed


def test_scores_discriminate() -> None:
    """Not a constant: the format reward tells the cases apart, accuracy is n/a without gold."""
    scores = rewards.format(prompts=[r["prompt"] for r in ROWS], completions=[r["completion"] for r in ROWS],
                            **columns_of(ROWS))
    assert scores[0] == 1.0 and scores[2] == 1.0  # think + summary; bare R1-Zero form
    assert scores[3] == 0.0 and scores[9] == 0.0  # truncated; empty summary
    if "answer" in load_all():
        accuracy = rewards.accuracy(prompts=["q"] * 4, completions=[ROWS[0]["completion"], ROWS[1]["completion"],
                                                                    ROWS[2]["completion"], ROWS[4]["completion"]],
                                    gold=["5", "5", "5", None])
        assert accuracy == [1.0, 0.0, 1.0, None]


def test_trl_calling_convention_strings_and_messages() -> None:
    """GRPOTrainer calls reward(prompts=, completions=, completion_ids=, <columns>, trainer_state=, log_metric=...)."""
    prompts = [render("What is 2 + 3?")] * 3
    completions = ["2 and 3 make 5. </think> <answer>5</answer>", "<think>unfinished", GOOD]
    extras = {"trainer_state": object(), "completion_ids": [[1, 2], [3], [4]], "log_extra": print,
              "log_metric": print, "gold": ["5", "5", "5"], "user_prompt": ["What is 2 + 3?"] * 3}
    as_strings = rewards.format(prompts=prompts, completions=completions, **extras)
    as_messages = rewards.format(
        prompts=[[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}] for p in prompts],
        completions=[[{"role": "assistant", "content": c}] for c in completions], **extras)
    assert as_strings == as_messages == [1.0, 0.0, 1.0]
    assert all(isinstance(score, float) for score in as_strings)


def test_sample_dict_is_the_filters() -> None:
    samples = rewards.reward_samples([render("Q?")], ["think </think> <answer>42</answer>"], gold=[42],
                                     user_prompt=["Q?"], domain=[None], trainer_state=None)
    sample = samples[0]
    assert sample["prompt"] == "Q?"  # the untemplated prompt, e.g. for language detection
    assert sample["gold"] == "42" and sample["domain"] == "math"  # normalized as the filter does
    assert (sample["reasoning"], sample["summary"]) == ("think", "42")


def test_unknown_check_fails_clearly() -> None:
    with pytest.raises(CotforgeError, match="unknown check 'no_such_check'"):
        rewards.from_check("no_such_check")
    lazy = rewards.CheckReward("no_such_check", "later")
    with pytest.raises(CotforgeError, match="unknown check 'no_such_check'"):
        lazy(prompts=["q"], completions=["a"])
    with pytest.raises(CotforgeError, match="unknown option"):
        rewards.from_check("format", no_such_option=1)


@pytest.mark.slow  # imports TRL, so transformers and torch: ~6 s of CPU
def test_trl_logs_the_reward_name() -> None:
    trl_utils = pytest.importorskip("trl.trainer.utils")
    assert trl_utils.get_callable_name(rewards.get("accuracy")) == "accuracy"
    assert trl_utils.get_callable_name(rewards.from_check("format", reward_name="fmt")) == "fmt"


def test_rewards_module_does_not_import_training_stack() -> None:
    import subprocess
    import sys

    code = ("import sys, cotforge.train.rewards, cotforge.train, cotforge.train.sft, cotforge.train.grpo; "
            "print(sorted(m for m in ('trl', 'transformers', 'peft', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
