"""The engine interface: requests in; completions with token counts and finish reasons out.

Two ways to drive an engine, each built on the other where an engine implements only one:

Streaming (what `cotforge generate`'s scheduler uses, `cotforge.generate.scheduler`):
- `engine.max_inflight`: how many *sequences* (sum of `request.n`) to keep outstanding so that the
  engine never runs dry: a vLLM engine's `max_num_seqs`, an OpenAI fleet's total concurrency, an
  in-process engine's batch size plus one batch queued. The scheduler keeps this many submitted.
- `engine.inflight`: sequences submitted and not generated yet. The scheduler tops up while it is
  below `max_inflight`; an engine that hands back samples one by one (openai: one call per sample)
  counts each off as it ends, even while its request waits for its siblings.
- `engine.submit(request, params)`: queue one request; returns at once, never waits on generation.
- `engine.poll(timeout_s)`: the requests finished since the last call, as `Finished` records (the
  very `Request` objects submitted, so callers match them by identity). Waits up to `timeout_s` for
  the first one; returns `[]` when none finished in time. A request the engine cannot serve at all
  (a prompt longer than the model's context) comes back with `error` set and no completions: the
  scheduler quarantines that prompt with the reason and goes on. A fault that ends the run (every
  server of a fleet gone past its retries, a crashed engine) raises `CotforgeError` from `poll`.
- Order: any. A request's `n` samples come back together in one `Finished` (the scheduler commits
  and judges a request as a unit), `completions[j]` being sample `request.first_index + j`.
- Seeds: sample j of a request is generated with `request.seed + j` where the engine seeds samples
  one by one; an engine that seeds differently (one seed for a whole `n` group) says so by setting
  `Completion.seed` on each completion. The scheduler records `Completion.seed` when set, else
  `request.seed + j`, as the sample's `seed`.

Stopping (every engine):
- `params.repetition_detection` (a `RepetitionDetection`, vLLM's `RepetitionDetectionParams`): the
  engine ends a sample whose last tokens repeat a pattern; it comes back with finish reason
  `repetition`, its partial text and the tokens it had.
- `engine.cancel(requests)`: stop requests submitted and not yet handed back (a prompt that has its
  accepted samples does not need its siblings). Each still comes back from `poll` exactly once; its
  samples that were cut come back with finish reason `cancelled` and the tokens they had (0 where the
  engine cannot know). Cancelling a request that already finished does nothing.
- `params.early_stop` (an `EarlyStop`, None: off): cotforge's own early stop, for what a suffix n-gram
  rule cannot see (a paragraph revisited with other text in between, a switch into another language,
  a reasoning past its budget). The engine calls `early_stop.watch(request)` once per sample (None:
  nothing to watch for it) and feeds the returned `Watcher` the sample's text as it is generated:
  `watcher.feed(text_delta, tokens_so_far)`, the deltas in order and together the whole text so far,
  `tokens_so_far` the sample's completion tokens up to the end of the delta. Engines may batch deltas:
  `early_stop.interval_tokens` says how often a feed is worth it (a feed costs O(its delta), so a
  coarser interval only delays a stop). A feed that returns a `Stop(check, reason, token)` ends that
  sample: the engine stops generating it (vLLM: `abort_request`; a stream: closes it; transformers: a
  stopping criterion) and hands it back with finish reason `early_stop`, the text and tokens it had,
  and `Completion.extra` = `{"check", "reason", "token"}` (`stopped_completion`). A watcher stops only
  on a verdict more text cannot reverse, so a stopped sample is one its check would reject anyway;
  the scheduler records it as rejected by that check. `SampleWatch` is the per-sample bookkeeping an
  engine needs (interval batching, the stop once found). The detectors live in
  `cotforge.checks.early` (engines never import checks); `cotforge generate` builds them from its
  chain.

Batch (`engine.generate(requests, params)`): for each request, exactly `request.n` completions, in
request order; a request that comes back with `error` raises `CotforgeError`. Used by callers that
want a plain call (a judge model, tests, benchmarks).

An engine subclass implements either `generate` (the base class then streams by running `generate`
on whatever is queued, in one background thread: embedded, replay) or `submit` + `poll` (the base
class then answers `generate` by submitting everything and polling: openai). Engines never see run
folders or checks; the scheduler owns planning, seeds, resume and commits.
"""

from __future__ import annotations

import importlib
import inspect
import queue
import threading
from dataclasses import dataclass, field
from typing import Protocol

from cotforge.errors import CotforgeError


REPETITION = "repetition"  # finish reason: the engine caught the sample repeating itself
CANCELLED = "cancelled"  # finish reason: cancelled before it ended (never judged, never exported)
EARLY_STOP = "early_stop"  # finish reason: a `Watcher` of `params.early_stop` stopped it (extra: check, reason, token)


@dataclass(frozen=True)
class Stop:
    """A watcher's verdict that more text cannot reverse: `check` rejects the sample for `reason`;
    `token` is the sample's completion-token count when it was seen."""

    check: str
    reason: str
    token: int

    def as_dict(self) -> dict:
        return {"check": self.check, "reason": self.reason, "token": self.token}


class Watcher(Protocol):
    """One sample's incremental checks: fed the text as it is generated, in order."""

    def feed(self, text_delta: str, tokens_so_far: int) -> Stop | None: ...


class EarlyStop(Protocol):
    """What `SamplingParams.early_stop` holds: builds a watcher per sample (None: nothing to watch).
    Must be hashable (sampling params group requests); identity is fine."""

    interval_tokens: int  # feed at most about this often, in tokens (engines may batch deltas)

    def watch(self, request: Request) -> Watcher | None: ...


@dataclass(frozen=True)
class RepetitionDetection:
    """vLLM's `RepetitionDetectionParams`: stop when the last `p` tokens (p in [min_pattern_size,
    max_pattern_size]) repeat the `p` before them `min_count - 1` times. Defaults and their calibration:
    `cotforge.engines.repetition`."""

    max_pattern_size: int
    min_pattern_size: int
    min_count: int

    def as_dict(self) -> dict:
        return {"max_pattern_size": self.max_pattern_size, "min_pattern_size": self.min_pattern_size,
                "min_count": self.min_count}


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.6  # DeepSeek-R1's recommended sampling
    top_p: float = 0.95
    max_tokens: int = 1024
    repetition_detection: RepetitionDetection | None = None  # None: never stop a loop early
    early_stop: EarlyStop | None = None  # cotforge's own early stop (module docstring); None: off


@dataclass(eq=False)  # compared by identity: a Finished record hands back the very object submitted
class Request:
    key: str  # the prompt id
    messages: list[dict]  # chat turns [{role, content}]; engines apply the model's chat template
    n: int = 1  # samples wanted for this prompt in this call
    seed: int = 0  # seed of the first sample; sample j uses seed + j where per-sample seeds exist
    raw_prompt: str | None = None  # when set: a plain-text completion prompt, no chat template
    first_index: int = 0  # sample_idx of the first sample asked for (replay and logging use it)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | ...
    prompt_tokens: int
    completion_tokens: int
    extra: dict = field(default_factory=dict)
    seed: int | None = None  # the seed this sample was generated with, where not `request.seed + j`


@dataclass(eq=False)
class Finished:
    """One request done: exactly `request.n` completions, or none and the reason it cannot be served."""

    request: Request
    completions: list[Completion] = field(default_factory=list)
    error: str | None = None


class SampleWatch:
    """An engine's bookkeeping for one sample's watcher: deltas batched to `interval_tokens`, the
    stop kept once found. `add` returns the stop when this delta (or one before) produced it."""

    def __init__(self, early_stop: EarlyStop | None, request: Request) -> None:
        self.watcher = early_stop.watch(request) if early_stop is not None else None
        self.interval = max(1, getattr(early_stop, "interval_tokens", 1) or 1)
        self._pending: list[str] = []
        self._fed_at = 0  # tokens at the last feed
        self.stop: Stop | None = None

    @property
    def active(self) -> bool:
        return self.watcher is not None and self.stop is None

    def add(self, text_delta: str, tokens_so_far: int, final: bool = False) -> Stop | None:
        """Queue a delta; feed the watcher once `interval_tokens` have passed since the last feed (or
        at once when `final`: nothing more will come)."""
        if self.stop is not None or self.watcher is None:
            return self.stop
        if text_delta:
            self._pending.append(text_delta)
        if self._pending and (final or tokens_so_far - self._fed_at >= self.interval):
            delta = "".join(self._pending)
            self._pending.clear()
            self._fed_at = tokens_so_far
            self.stop = self.watcher.feed(delta, tokens_so_far)
        return self.stop


def stopped_completion(text: str, prompt_tokens: int, completion_tokens: int, stop: Stop) -> Completion:
    """The completion an engine hands back for a sample a watcher stopped: its partial text and tokens."""
    return Completion(text, EARLY_STOP, prompt_tokens, completion_tokens, extra=stop.as_dict())


class Engine:
    """Subclasses set `name` and implement `generate`, or `submit` + `poll`; `model` names what they run."""

    name = ""
    model = ""
    max_inflight = 16  # sequences to keep outstanding; engines set what saturates them
    # Whether the scheduler may ask extra, unplanned samples to keep the engine full at a run's tail; an
    # engine with a fixed supply of samples (replay) says no.
    fills_tail = True

    # -- batch -------------------------------------------------------------------------------------
    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        """For each request, exactly `request.n` completions, in request order."""
        if type(self).submit is Engine.submit:
            raise NotImplementedError(f"{type(self).__name__} implements neither generate nor submit/poll")
        waiting = {id(r): r for r in requests if r.n > 0}
        done: dict[int, list[Completion]] = {}
        for request in waiting.values():
            self.submit(request, params)
        while len(done) < len(waiting):
            for finished in self.poll(1.0):
                if finished.error is not None:
                    raise CotforgeError(f"{self.name}: prompt '{finished.request.key}': {finished.error}")
                done[id(finished.request)] = finished.completions
        return [done.get(id(r), []) for r in requests]

    # -- streaming ---------------------------------------------------------------------------------
    def submit(self, request: Request, params: SamplingParams) -> None:
        """Queue one request; the default runs `generate` on queued requests in a background thread."""
        self._batch_streamer().submit(request, params)

    def cancel(self, requests: list[Request]) -> None:
        """Stop these requests (see the module docstring). The default drops those still queued; an
        engine that can stop a running one reads `cancelled(request)` while it generates."""
        self._batch_streamer().cancel(requests)

    def cancelled(self, request: Request) -> bool:
        """Whether `cancel` was asked for this request (engines read it while generating)."""
        streamer = self.__dict__.get("_streamer")
        return bool(streamer) and id(request) in streamer.cancelled

    def poll(self, timeout_s: float = 0.0) -> list[Finished]:
        """Requests finished since the last call; waits up to `timeout_s` for the first."""
        return self._batch_streamer().poll(timeout_s)

    @property
    def inflight(self) -> int:
        """Sequences submitted and not yet handed back by `poll`."""
        streamer = self.__dict__.get("_streamer")
        return streamer.inflight if streamer else 0

    def _batch_streamer(self) -> _BatchStreamer:
        if "_streamer" not in self.__dict__:
            self._streamer = _BatchStreamer(self)
        return self._streamer

    def close(self) -> None:
        streamer = self.__dict__.pop("_streamer", None)
        if streamer:
            streamer.stop()


class _BatchStreamer:
    """Streaming on top of `generate`: one thread takes whatever is queued (up to the engine's
    `stream_batch` sequences, default `max_inflight`) and runs one `generate` call on it.

    For an in-process engine this is as streaming as it gets: the model is busy on one batch while the
    caller judges the previous one and queues the next, so the model never waits for the checks.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.queue: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self.inflight = 0
        # Requests cancelled and not yet handed back, held by reference so that no id() is reused.
        self.cancelled: dict[int, Request] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{engine.name}-engine", daemon=True)
        self._thread.start()

    def submit(self, request: Request, params: SamplingParams) -> None:
        with self._lock:
            self.inflight += request.n
        self.queue.put((request, params))

    def cancel(self, requests: list[Request]) -> None:
        with self._lock:
            self.cancelled.update((id(r), r) for r in requests)

    def poll(self, timeout_s: float) -> list[Finished]:
        return drain(self.done, timeout_s)

    def _loop(self) -> None:
        limit = getattr(self.engine, "stream_batch", None) or self.engine.max_inflight
        while not self._stopped.is_set():
            try:
                first = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch, size = [first], first[0].n
            while size < limit:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                size += item[0].n
            # One generate call per sampling-params group (a caller normally uses one for a whole run).
            groups: dict[SamplingParams, list[Request]] = {}
            for request, params in batch:
                if id(request) in self.cancelled:  # cancelled while queued: nothing generated
                    self._hand_back(request, [Completion("", CANCELLED, 0, 0) for _ in range(request.n)])
                    continue
                groups.setdefault(params, []).append(request)
            try:
                for params, requests in groups.items():
                    outputs = self.engine.generate(requests, params)
                    for request, completions in zip(requests, outputs):
                        self._hand_back(request, completions)
            except BaseException as error:  # noqa: BLE001 - handed to the caller's poll, which raises it
                self.done.put(error)
                return

    def _hand_back(self, request: Request, completions: list[Completion]) -> None:
        with self._lock:
            self.inflight -= request.n
            self.cancelled.pop(id(request), None)
        self.done.put(Finished(request, completions))

    def stop(self) -> None:
        self._stopped.set()


ENGINES = {
    "embedded": "cotforge.engines.embedded:EmbeddedEngine",
    "vllm": "cotforge.engines.vllm:VLLMEngine",
    "openai": "cotforge.engines.openai:OpenAIEngine",
    "replay": "cotforge.engines.replay:ReplayEngine",
}

# Engine options that change how fast samples come, never which: a run may resume with other values.
THROUGHPUT_OPTIONS = frozenset({
    "base_url", "concurrency", "timeout_s", "connect_timeout_s", "max_retries", "backoff_s", "backoff_max_s", "outage_s",
    "probe_interval_s", "probe_timeout_s", "tensor_parallel_size", "pipeline_parallel_size",
    "gpu_memory_utilization", "max_num_seqs", "threads", "stream_batch", "api_key", "stream", "metrics_interval_s",
})


def engine_class(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise CotforgeError(f"unknown engine '{name}' (one of {', '.join(ENGINES)})")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def check_options(name: str, options: dict) -> None:
    """One clear line for an option the engine does not take (before any heavy import or model load)."""
    if name not in ENGINES:
        raise CotforgeError(f"unknown engine '{name}' (one of {', '.join(ENGINES)})")
    if name == "vllm":  # takes any vllm.LLM keyword; vLLM itself names a wrong one
        return
    parameters = inspect.signature(engine_class(name).__init__).parameters
    known = [p for p in parameters if p != "self" and parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(options) - set(known))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        raise CotforgeError(f"engine '{name}': unknown option(s) {', '.join(unknown)} "
                            f"(it takes: {', '.join(known)})")
    validate = getattr(engine_class(name), "validate_options", None)
    if validate is not None:  # values an engine can judge without starting (e.g. a URL that is none)
        validate(options)


def drain(done: queue.Queue, timeout_s: float) -> list[Finished]:
    """What an engine's thread has queued for `poll`: waits up to `timeout_s` for the first item, then
    takes what else is there. An exception that thread queued is raised here, in the caller's thread;
    `None` (a wake-up with nothing finished) is dropped."""
    out = []
    try:
        out.append(done.get(timeout=timeout_s) if timeout_s > 0 else done.get_nowait())
        while True:
            out.append(done.get_nowait())
    except queue.Empty:
        pass
    for item in out:
        if isinstance(item, BaseException):
            raise item
    return [item for item in out if item is not None]


def build_engine(name: str, model: str | None, options: dict) -> Engine:
    """An engine from a stage's configuration: its engine options, plus `model` where one is named."""
    return get_engine(name, **({**options, "model": model} if model else options))


def get_engine(name: str, **options) -> Engine:
    """Build an engine by name; heavy imports happen only here."""
    check_options(name, options)
    return engine_class(name)(**options)
