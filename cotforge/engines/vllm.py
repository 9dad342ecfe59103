"""vLLM offline inference (`vllm.LLM`): the engine for GPUs, tensor parallel across them.

One vLLM request per prompt carries `SamplingParams(n=k, seed=...)`, so the k samples share one
prefill. Chat prompts are rendered with the model's chat template and handed over as token ids: as
text, vLLM's tokenizer would add a second BOS to templates that already start with one (Llama and
DeepSeek-R1 distills do). vLLM is imported when the engine is built, never at module import.
"""

from __future__ import annotations

import gc
from typing import Any

from cotforge.engines.base import Completion, Engine, Request, SamplingParams


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, model: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, dtype: str = "auto", seed: int = 0,
                 **engine_options: Any) -> None:
        try:
            import vllm
        except ImportError as error:
            raise ImportError("the vllm engine needs vLLM and a GPU: pip install 'cotforge[vllm]'") from error
        self._vllm = vllm
        self.model = model
        options = {"tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": gpu_memory_utilization,
                   "dtype": dtype, "seed": seed, **engine_options}
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        self.llm = vllm.LLM(model=model, **options)
        self.tokenizer = self.llm.get_tokenizer()

    def prompt(self, request: Request) -> dict:
        """A vLLM prompt: token ids of the chat-templated messages, or the raw text prompt."""
        if request.raw_prompt is not None:
            return {"prompt": request.raw_prompt}
        text = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        return {"prompt_token_ids": self.tokenizer.encode(text, add_special_tokens=False)}

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        asked = [request for request in requests if request.n > 0]
        sampling = [self._vllm.SamplingParams(n=request.n, temperature=params.temperature, top_p=params.top_p,
                                              max_tokens=params.max_tokens, seed=request.seed)
                    for request in asked]
        outputs = iter(self.llm.generate([self.prompt(request) for request in asked], sampling, use_tqdm=False))
        results = []
        for request in requests:
            if request.n == 0:
                results.append([])
                continue
            output = next(outputs)  # vLLM returns outputs in prompt order
            prompt_tokens = len(output.prompt_token_ids or [])
            results.append([Completion(sample.text, sample.finish_reason or "unknown", prompt_tokens,
                                       len(sample.token_ids))
                            for sample in sorted(output.outputs, key=lambda sample: sample.index)])
        return results

    def close(self) -> None:
        self.llm = None
        self.tokenizer = None
        gc.collect()
