"""One HTTP call to one server, and what its answer means: commit, retry with backoff, move, or fail."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import aiohttp

from cotforge.engines.base import (CANCELLED, Completion, Request, SampleWatch, SamplingParams, Stop,
                                   stopped_completion)
from cotforge.engines.openai.stream import STREAM_OPTIONS, EventStream
from cotforge.errors import CotforgeError

if TYPE_CHECKING:
    from cotforge.engines.openai.engine import InFlight
    from cotforge.engines.openai.fleet import Fleet, Server

TOO_LONG = ("maximum context length", "max_model_len", "context length", "too long", "longer than")
REPETITION_FIELD = "repetition_detection"  # vLLM's extension of the completions body
STREAM_OPTIONS_FIELD = "stream_options"  # usage in the stream (OpenAI's and vLLM's; some servers refuse it)
OPTIONAL_FIELDS = (REPETITION_FIELD, STREAM_OPTIONS_FIELD)  # a call may drop these when a server refuses them
REFUSAL_STATUSES = (400, 422)


def refused_field(body: dict, text: str) -> str | None:
    """The optional field of `body` that a 4xx answer names (OpenAI: "Unrecognized request argument
    supplied: X"; pydantic servers: "extra fields not permitted" with X in the location), else None."""
    return next((name for name in OPTIONAL_FIELDS if name in body and name in text), None)


@dataclass(eq=False)
class Pending:
    """A submitted request: its completions fill in as its calls answer."""

    request: Request
    params: SamplingParams
    slots: list = field(default_factory=list)  # Completion per sample index, None until answered
    finished: bool = False


@dataclass(eq=False)
class Job:
    """One HTTP call: `n` samples of a request starting at sample `first` (seed + first)."""

    pending: Pending
    first: int
    n: int
    attempts: int = 0  # failures in the current streak (the retry budget)
    restarts: int = 0  # budgets started again (capped: it may be the call that keeps taking its server down)
    failing_since: float | None = None  # monotonic time of the streak's first failure
    last_failed_at: float = 0.0
    not_before: float = 0.0
    last_error: str = "no attempt"
    last_url: str = ""
    moved: bool = False  # set by the probe before it cancels the call
    cancelled: bool = False  # set by Engine.cancel before it cancels the call
    started: bool = False  # the call's coroutine ran (a task cancelled before its first step never does)

    def single(self, index: int) -> Job:
        """A call for one sample of this one that carries its retry budget on."""
        return Job(self.pending, index, 1, self.attempts, self.restarts, self.failing_since, self.last_failed_at)


# What can go wrong with a call, counted apart in the engine's `faults` (the run's summary prints them).
# OUTAGE faults (transport, 429, 5xx and bodies a 200 should not have: a proxy or a server in the middle
# of a restart) are ridden out for `outage_s` before a call gives up; an empty completion is a server
# answering but not generating: only the retry count holds it. After a transport fault (the server went
# away) or an empty completion (one it blanked), a call's budget starts again once its server has given
# a real answer since: a server that blanks a third of its answers is ridden out, one that blanks all of
# them stops the run within `max_retries`.
TRANSPORT = ("connection", "timeout", "probe")
RESTARTING = (*TRANSPORT, "empty_completion")
OUTAGE = (*TRANSPORT, "http_429", "http_5xx", "bad_json", "no_choices")
FAULTS = (*OUTAGE, "empty_completion")
RESTARTS_CAP = 4  # budgets a call may start again: past that it may be the call that takes its server down


class Host(Protocol):
    """What a call needs from the engine that sends it (OpenAIEngine)."""

    inflight_ledger: InFlight
    wake: asyncio.Event

    def queue_front(self, jobs: list[Job]) -> None: ...
    def finish(self, pending: Pending, error: str | None = None) -> None: ...
    def fail(self, error: BaseException) -> None: ...


class Calls:
    """Sends jobs to servers; a failed call goes back to the front of the host's queue (or ends the run)."""

    def __init__(self, host: Host, fleet: Fleet, model: str, max_retries: int, backoff_s: float,
                 backoff_max_s: float, outage_s: float, stream: bool | None = None) -> None:
        self.host = host
        self.stream = stream  # None: stream only where it pays (`streams`)
        self.fleet = fleet
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.outage_s = outage_s
        self.moved = 0  # calls moved off a failed server (reported by tests and benchmarks)
        self.faults = dict.fromkeys(FAULTS, 0)  # failed attempts by kind, this session
        self.faults["budget_restarts"] = 0
        self.stream_events = 0  # SSE data events parsed, this session (tests and benchmarks read it)
        self.early_stopped = 0  # samples a watcher stopped (their streams closed), this session
        self.streamed_tokens = 0  # completion tokens of the streams read to their end, this session
        self.chunk_noted = False  # the one-time note about fine-grained streams (chunk_note) was printed

    def streams(self, params: SamplingParams) -> bool:
        """Whether calls with `params` stream (see the engine's docstring for why this is the default:
        streaming costs the client CPU per token, so only calls whose samples cotforge itself watches
        stream, unless the engine was told `stream=True/False`)."""
        if self.stream is not None:
            return self.stream
        return getattr(params, "early_stop", None) is not None

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** attempt))  # full jitter

    def body(self, job: Job, server: Server | None = None) -> tuple[str, dict]:
        """The path and JSON body of a job's call (to `server`: what it refused is left out)."""
        request, params = job.pending.request, job.pending.params
        body: dict = {"model": self.model, "temperature": params.temperature, "top_p": params.top_p,
                      "max_tokens": params.max_tokens, "seed": request.seed + job.first}
        if params.repetition_detection is not None and not (server and REPETITION_FIELD in server.refused):
            body[REPETITION_FIELD] = params.repetition_detection.as_dict()  # vLLM's server takes it
        if job.n > 1:
            body["n"] = job.n
        if self.streams(params):
            body["stream"] = True
            if not (server and STREAM_OPTIONS_FIELD in server.refused):
                body[STREAM_OPTIONS_FIELD] = dict(STREAM_OPTIONS)  # tokens per chunk, the usage at the end
        if request.raw_prompt is not None:
            path, body["prompt"] = "/completions", request.raw_prompt
        else:
            path, body["messages"] = "/chat/completions", request.messages
        return path, body

    def requeue(self, job: Job, server: Server, kind: str, error: str, url: str, delay: float = 0.0) -> None:
        """A failed attempt of `kind` (one of FAULTS): back to the front of the queue after `delay`, or
        the end of the run (one line) once the call is out of budget.

        The budget: more than `max_retries` failures in a row, and for an outage (OUTAGE kinds) failing
        for `outage_s` as well, so a server restart of a minute or two is ridden out however fast its
        refusals come (a fleet's down servers refuse in milliseconds). A transport failure after its
        server has answered another call since this call's last failure is a new outage: the budget
        starts again (a call held through one restart and reset by the next is not at its 5th try); the
        same after an empty completion (RESTARTING)."""
        now = time.monotonic()
        self.faults[kind] += 1
        if (kind in RESTARTING and job.failing_since is not None and server.last_ok > job.last_failed_at
                and job.restarts < RESTARTS_CAP):
            job.attempts, job.failing_since = 0, None
            job.restarts += 1
            self.faults["budget_restarts"] += 1
        job.attempts += 1
        job.failing_since = now if job.failing_since is None else job.failing_since
        job.last_failed_at = now
        job.last_error, job.last_url = error, url
        failing_for = now - job.failing_since
        out_of_time = kind not in OUTAGE or failing_for >= self.outage_s
        if job.attempts > self.max_retries and out_of_time:
            self.host.fail(CotforgeError(self.give_up(job, kind, failing_for)))
            return
        job.not_before = now + delay
        self.host.queue_front([job])  # a retried call goes before new work: its prompt waits on it

    def never_started(self, job: Job, server: Server) -> None:
        """A call task cancelled before its first step: none of `call`'s handlers ran, so do their work."""
        self.host.inflight_ledger.returned(server, job.n)
        if job.cancelled:
            self.cancelled(job)
        elif job.moved:
            job.moved = False
            self.moved += 1
            self.requeue(job, server, "probe", "server stopped answering (probe failed)", server.url)

    @staticmethod
    def give_up(job: Job, kind: str, failing_for: float) -> str:
        if kind == "empty_completion":
            what = (f"{job.attempts} empty completions in a row for one sample (finish reason stop, 0 completion "
                    f"tokens): the server answers without generating; look at its log, chat template and stop "
                    f"tokens")
        else:
            what = f"gave up after {job.attempts} attempts in {failing_for:.0f} s; last: {job.last_error}"
        return f"{job.last_url}: {what}; rerun the same command to resume (committed samples are kept)"

    async def call(self, job: Job, server: Server) -> None:
        job.started = True
        path, body = self.body(job, server)
        url = server.url + path
        ledger = self.host.inflight_ledger
        stream = EventStream(job.n, "messages" in body) if body.get("stream") else None
        # cotforge's own early stop: one watcher per sample, fed as its stream comes (a retried call
        # starts a new one: its text starts again). Only single-sample calls are watched (the engine
        # sends singles when params.early_stop is set): closing a stream stops all of its samples.
        early_stop = job.pending.params.early_stop
        watched = stream is not None and early_stop is not None and job.n == 1
        watch = SampleWatch(early_stop, job.pending.request) if watched else None
        stopped: Stop | None = None
        try:
            try:
                async with server.client.post(url, json=body) as response:
                    status, headers = response.status, response.headers
                    if stream is not None and status == 200:
                        text = ""
                        async for data in response.content.iter_any():
                            before = stream.events
                            deltas = stream.feed(data)
                            self.stream_events += stream.events - before
                            if watch is not None and watch.active and deltas:
                                stopped = self.watched(watch, stream, deltas)
                                if stopped is not None:
                                    response.close()  # the connection goes: vLLM aborts the request
                                    break
                    else:
                        text = await response.text()
            finally:
                ledger.returned(server, job.n)  # the server no longer holds these, whatever came back
        except asyncio.CancelledError:
            if job.cancelled:  # Engine.cancel: the connection is closed, the server aborts the request
                self.cancelled(job, stream)  # with what the stream had received
            elif job.moved:  # the probe found the server dead: move the call
                job.moved = False
                self.moved += 1
                self.requeue(job, server, "probe", "server stopped answering (probe failed)", url)
            raise
        except TimeoutError as error:  # before ClientError: aiohttp's timeouts are both
            self.fleet.mark_down(server)
            self.moved += len(self.fleet.servers) > 1
            self.requeue(job, server, "timeout", f"timeout ({type(error).__name__})", url)
            return
        except aiohttp.ClientError as error:
            self.fleet.mark_down(server)
            self.moved += len(self.fleet.servers) > 1
            self.requeue(job, server, "connection", f"connection error ({type(error).__name__}: {error})", url)
            return
        server.last_answer = time.monotonic()
        self.host.wake.set()
        server.failures = 0
        if status != 200:
            last = f"HTTP {status}: {text[:300]}"
            if status == 429 or status >= 500:
                retry_after = retry_after_s(headers.get("retry-after"))
                delay = min(self.backoff_max_s, retry_after) if retry_after is not None else self.backoff(job.attempts)
                self.requeue(job, server, "http_429" if status == 429 else "http_5xx", last, url, delay)
            elif status in REFUSAL_STATUSES and refused_field(body, text):
                # A server without vLLM's extension (OpenAI's API, some proxies) refuses the unknown
                # field: learned once per server, the call goes again without it, not as a retry.
                server.refused.add(refused_field(body, text))
                self.host.queue_front([job])
            elif status == 400 and any(s in text.lower() for s in TOO_LONG):
                self.host.finish(job.pending, error=f"{url}: {last}")
            else:  # a bad request stays bad: no retry, and the next ones would fail the same way
                self.host.fail(CotforgeError(f"{url}: {last}"))
            return
        if stopped is not None:
            self.stopped(job, server, stream, stopped)
            return
        if stream is not None:
            self.streamed(job, server, url, stream)
            return
        try:
            answer = json.loads(text)
            if not isinstance(answer, dict):
                raise ValueError("not a JSON object")
        except ValueError:  # a cut or garbled body: the server (or a proxy) at fault, as with a 5xx
            self.requeue(job, server, "bad_json", f"HTTP 200 but not a JSON object: {text[:300]!r}", url,
                         self.backoff(job.attempts))
            return
        self.take(job, server, url, answer)

    @staticmethod
    def watched(watch: SampleWatch, stream: EventStream, deltas: list[tuple[int, str, int]]) -> Stop | None:
        """Feed a single-sample stream's new deltas to its watcher; the stop it found, if any. A sample
        whose finish reason came in these same bytes is whole: the checks judge it, nothing to stop."""
        for _, delta, tokens in deltas:
            stop = watch.add(delta, tokens)
            if stop is not None:
                return None if stream.choices[0].finish_reason is not None else stop
        return None

    def stopped(self, job: Job, server: Server, stream: EventStream, stop: Stop) -> None:
        """A sample its watcher stopped: its stream is closed; it comes back `early_stop` with the text
        and tokens it had."""
        server.last_ok = time.monotonic()  # the server answered: a real answer, cut by us
        so_far = stream.choices[0]
        self.early_stopped += 1
        job.pending.slots[job.first] = stopped_completion(so_far.text(), stream.prompt_tokens,
                                                          so_far.completion_tokens, stop)
        self.host.inflight_ledger.answered(1)
        if all(slot is not None for slot in job.pending.slots):
            self.host.finish(job.pending)

    def streamed(self, job: Job, server: Server, url: str, stream: EventStream) -> None:
        """A stream that ended: the whole answer (taken as a plain one is), or a stream broken mid-way
        (a retry of those samples with their seeds, as a dropped connection is)."""
        if stream.finished:
            self.streamed_tokens += sum(c.completion_tokens for c in stream.choices)
            note = None if self.chunk_noted else chunk_note(len(self.fleet.servers), self.streamed_tokens,
                                                             self.stream_events)
            if note:
                self.chunk_noted = True
                print(f"cotforge: note: {note}", file=sys.stderr, flush=True)
            self.take(job, server, url, stream.answer(), stream.per_choice_tokens())
        elif stream.bad is not None:
            self.requeue(job, server, "bad_json", f"HTTP 200 stream with a data line that is not a JSON "
                         f"object: {stream.bad!r}", url, self.backoff(job.attempts))
        else:  # the server (or a proxy) closed the stream before every finish reason: a transport fault
            self.fleet.mark_down(server)
            self.moved += len(self.fleet.servers) > 1
            self.requeue(job, server, "connection", f"stream ended after {stream.events} events without a finish "
                         f"reason", url)

    def cancelled(self, job: Job, stream: EventStream | None = None) -> None:
        """A job stopped by Engine.cancel (queued or in flight): its samples end as `cancelled`, with the
        text and tokens a stream had received (a plain call received nothing: 0)."""
        slots = job.pending.slots
        self.host.inflight_ledger.answered(job.n)
        for k, j in enumerate(range(job.first, job.first + job.n)):
            if stream is None:
                slots[j] = Completion("", CANCELLED, 0, 0)
            else:
                so_far = stream.choices[k]
                slots[j] = Completion(so_far.text(), CANCELLED, stream.prompt_tokens, so_far.completion_tokens)
        if all(slot is not None for slot in slots):
            self.host.finish(job.pending)

    def take(self, job: Job, server: Server, url: str, answer: dict, tokens: list[int] | None = None) -> None:
        """`tokens`: each choice's completion tokens where known (a stream with continuous usage)."""
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices:  # nothing to take: like a 5xx, never a sample
            self.requeue(job, server, "no_choices", f"HTTP 200 without choices: {json.dumps(answer)[:300]}", url,
                         self.backoff(job.attempts))
            return
        choices = sorted(choices, key=lambda c: c.get("index", 0))[:job.n]
        if job.n > 1 and (server.n_per_request is None or len(choices) < job.n):
            server.n_per_request = len(choices) >= job.n
        usage = answer.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        # Servers report one usage for all n choices: the prompt once, completion tokens summed. We split
        # the sum evenly (remainder to the first choices); per-choice counts are approximate when n > 1.
        total, count = int(usage.get("completion_tokens") or 0), max(len(choices), 1)
        slots = job.pending.slots
        empty = []  # sample indices the server answered without generating anything
        for k, choice in enumerate(choices):
            index = job.first + k
            own = tokens[k] if tokens is not None and k < len(tokens) else total // count + (k < total % count)
            completion = Completion(choice_text(choice), choice.get("finish_reason") or "unknown", prompt_tokens,
                                    own, choice_extra(choice))
            if blank(completion, usage):
                empty.append(index)
            else:
                slots[index] = completion
        if len(empty) < len(choices):
            server.last_ok = time.monotonic()  # a real answer (a blank one is not)
        self.host.inflight_ledger.answered(len(choices) - len(empty))  # the empty ones are asked again
        for index in empty:  # a server fault, not the model's answer: retried, counted apart, never judged
            retry = job if job.n == 1 else job.single(index)
            self.requeue(retry, server, "empty_completion", "empty completion (finish reason stop, 0 completion "
                         "tokens)", url, self.backoff(retry.attempts))
        # Top up answers that came back short with single requests for the missing sample indices.
        missing = [j for j in range(job.first + len(choices), job.first + job.n) if slots[j] is None]
        self.host.queue_front([Job(job.pending, j, 1) for j in missing])
        if all(slot is not None for slot in slots):
            self.host.finish(job.pending)


FLEET_NOTE_SERVERS = 4  # a fleet this large streaming a chunk per token can saturate one client core
FLEET_NOTE_EVENTS = 5000  # ... judged once this many events were read (the ratio is settled by then)


def chunk_note(servers: int, tokens: int, events: int) -> str | None:
    """One line for a fleet whose servers stream about a chunk per token (vLLM's default): each chunk
    costs this client ~0.1 ms of CPU (benchmarks/stream_cost.py), so a busy fleet outruns one core."""
    if servers < FLEET_NOTE_SERVERS or events < FLEET_NOTE_EVENTS or tokens >= 2 * events:
        return None
    return (f"the {servers} servers stream about {tokens / events:.1f} tokens a chunk; each chunk costs this client "
            f"~0.1 ms of CPU: start them with `vllm serve --stream-interval 16` (or run with --early-stop off, "
            f"or --engine-option stream=false, to read answers whole)")


def blank(completion: Completion, usage: dict) -> bool:
    """An answer with nothing in it: no text, finish reason `stop` and a reported 0 completion tokens.
    (A model that stops at once still spends its end-of-sequence token; a server reports 0 when it never
    ran the model, e.g. a blanked or dropped sequence.)"""
    return (not completion.text and completion.finish_reason == "stop" and "completion_tokens" in usage
            and completion.completion_tokens == 0)


def choice_text(choice: dict) -> str:
    if "message" not in choice:
        return choice.get("text") or ""
    message = choice["message"]
    content = message.get("content") or ""
    # vLLM/SGLang with a reasoning parser move the <think> part out of the content; put it back so the
    # sample keeps the whole R1-style completion.
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if not reasoning:
        return content
    if choice.get("finish_reason") == "length" and not content:
        return f"<think>\n{reasoning}"  # cut off while thinking: left unclosed, so `format` rejects it
    return f"<think>\n{reasoning}\n</think>\n\n{content}"


def choice_extra(choice: dict) -> dict:
    message = choice.get("message") or {}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return {"reasoning_content": reasoning} if reasoning else {}


def retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
