"""The vLLM adapter, against a stand-in `vllm` module injected into `sys.modules`.

The stand-in exists only because vLLM needs a GPU, which neither CI nor this machine has. It records
what the adapter sends (engine options, prompts, per-request sampling params) and answers with
RequestOutput-shaped objects, so these tests check the adapter's side of the contract: one request
per prompt with n=k, the sampling params, the chat template applied, and how outputs map back.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import ClassVar

import pytest

from cotforge.engines import Request, SamplingParams, get_engine


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None


class FakeTokenizer:
    def __init__(self) -> None:
        self.templated: list[tuple[list[dict], bool, bool]] = []

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False,
                            tokenize: bool = True) -> str:
        self.templated.append((messages, add_generation_prompt, tokenize))
        turns = "".join(f"<|{m['role']}|> {m['content']} " for m in messages)
        return "<bos> " + turns + ("<|assistant|>" if add_generation_prompt else "")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        words = text.split()
        return ([0] if add_special_tokens else []) + [len(word) for word in words]


class FakeLLM:
    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **options) -> None:
        self.options = options
        self.tokenizer = FakeTokenizer()
        self.calls: list[tuple[list[dict], list[FakeSamplingParams], dict]] = []
        FakeLLM.instances.append(self)

    def get_tokenizer(self) -> FakeTokenizer:
        return self.tokenizer

    def generate(self, prompts: list[dict], sampling_params: list[FakeSamplingParams], **kwargs) -> list:
        self.calls.append((prompts, sampling_params, kwargs))
        outputs = []
        for k, (prompt, params) in enumerate(zip(prompts, sampling_params)):
            ids = prompt.get("prompt_token_ids") or self.tokenizer.encode(prompt["prompt"])
            # Samples come back out of index order; the last one is cut at max_tokens.
            samples = [types.SimpleNamespace(index=j, text=f"p{k}s{j}",
                                             token_ids=list(range(params.max_tokens if j == params.n - 1 else j + 1)),
                                             finish_reason="length" if j == params.n - 1 else "stop")
                       for j in reversed(range(params.n))]
            outputs.append(types.SimpleNamespace(prompt_token_ids=ids, outputs=samples))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


def test_engine_options_reach_vllm_llm(fake_vllm):
    engine = get_engine("vllm", model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", tensor_parallel_size=4,
                        max_model_len=32768, enable_prefix_caching=True)
    (llm,) = FakeLLM.instances
    assert llm.options == {"model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "tensor_parallel_size": 4,
                           "gpu_memory_utilization": 0.9, "dtype": "auto", "seed": 0, "max_model_len": 32768,
                           "enable_prefix_caching": True}
    assert engine.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    get_engine("vllm", model="m")
    assert "max_model_len" not in FakeLLM.instances[-1].options  # vLLM picks it from the model


def test_one_request_per_prompt_with_n_and_outputs_mapped(fake_vllm):
    engine = get_engine("vllm", model="m")
    messages = [{"role": "user", "content": "What is 2+2?"}]
    requests = [Request("a", messages, n=3, seed=100), Request("b", [], n=0, seed=5),
                Request("c", [], n=2, seed=200, raw_prompt="Once upon a time")]
    out = engine.generate(requests, SamplingParams(temperature=0.6, top_p=0.95, max_tokens=64))

    (llm,) = FakeLLM.instances
    (prompts, sampling, kwargs), = llm.calls  # one generate call for the whole list
    assert sampling == [FakeSamplingParams(n=3, temperature=0.6, top_p=0.95, max_tokens=64, seed=100),
                        FakeSamplingParams(n=2, temperature=0.6, top_p=0.95, max_tokens=64, seed=200)]
    assert kwargs == {"use_tqdm": False}
    # Chat template applied with the assistant turn opened, sent as ids without a second BOS.
    assert llm.tokenizer.templated == [(messages, True, False)]
    assert prompts[0] == {"prompt_token_ids": llm.tokenizer.encode(
        "<bos> <|user|> What is 2+2? <|assistant|>", add_special_tokens=False)}
    assert prompts[1] == {"prompt": "Once upon a time"}

    assert [len(completions) for completions in out] == [3, 0, 2]
    assert [c.text for c in out[0]] == ["p0s0", "p0s1", "p0s2"]  # sorted by sample index
    assert [(c.finish_reason, c.completion_tokens) for c in out[0]] == [("stop", 1), ("stop", 2), ("length", 64)]
    assert {c.prompt_tokens for c in out[0]} == {6}  # <bos> <|user|> What is 2+2? <|assistant|>
    assert [c.text for c in out[2]] == ["p1s0", "p1s1"] and out[2][0].prompt_tokens == 5


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'cotforge\[vllm\]'"):
        get_engine("vllm", model="m")
