"""One HTTP call to one server, and what its answer means: commit, retry with backoff, move, or fail."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import aiohttp

from cotforge.engines.base import Completion, Request, SamplingParams
from cotforge.io.errors import CotforgeError

if TYPE_CHECKING:
    from cotforge.engines.openai.engine import InFlight
    from cotforge.engines.openai.fleet import Fleet, Server

TOO_LONG = ("maximum context length", "max_model_len", "context length", "too long", "longer than")


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
    attempts: int = 0
    not_before: float = 0.0
    last_error: str = "no attempt"
    last_url: str = ""
    moved: bool = False  # set by the probe before it cancels the call


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
                 backoff_max_s: float) -> None:
        self.host = host
        self.fleet = fleet
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.moved = 0  # calls moved off a failed server (reported by tests and benchmarks)

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** attempt))  # full jitter

    def body(self, job: Job) -> tuple[str, dict]:
        """The path and JSON body of a job's call."""
        request, params = job.pending.request, job.pending.params
        body: dict = {"model": self.model, "temperature": params.temperature, "top_p": params.top_p,
                      "max_tokens": params.max_tokens, "seed": request.seed + job.first}
        if job.n > 1:
            body["n"] = job.n
        if request.raw_prompt is not None:
            path, body["prompt"] = "/completions", request.raw_prompt
        else:
            path, body["messages"] = "/chat/completions", request.messages
        return path, body

    def requeue(self, job: Job, error: str, url: str, delay: float = 0.0) -> None:
        job.attempts += 1
        job.last_error, job.last_url = error, url
        if job.attempts > self.max_retries:
            self.host.fail(CotforgeError(f"{url}: gave up after {job.attempts} attempts; last: {error}"))
            return
        job.not_before = time.monotonic() + delay
        self.host.queue_front([job])  # a retried call goes before new work: its prompt waits on it

    async def call(self, job: Job, server: Server) -> None:
        path, body = self.body(job)
        url = server.url + path
        ledger = self.host.inflight_ledger
        try:
            try:
                async with server.client.post(url, json=body) as response:
                    status, text, headers = response.status, await response.text(), response.headers
            finally:
                ledger.returned(server, job.n)  # the server no longer holds these, whatever came back
        except asyncio.CancelledError:
            if job.moved:  # the probe found the server dead: move the call
                job.moved = False
                self.moved += 1
                self.requeue(job, "server stopped answering (probe failed)", url)
            raise
        except TimeoutError as error:  # before ClientError: aiohttp's timeouts are both
            self.fleet.mark_down(server)
            self.moved += len(self.fleet.servers) > 1
            self.requeue(job, f"timeout ({type(error).__name__})", url)
            return
        except aiohttp.ClientError as error:
            self.fleet.mark_down(server)
            self.moved += len(self.fleet.servers) > 1
            self.requeue(job, f"connection error ({type(error).__name__}: {error})", url)
            return
        server.last_answer = time.monotonic()
        self.host.wake.set()
        server.failures = 0
        if status != 200:
            last = f"HTTP {status}: {text[:300]}"
            if status == 429 or status >= 500:
                retry_after = retry_after_s(headers.get("retry-after"))
                delay = min(self.backoff_max_s, retry_after) if retry_after is not None else self.backoff(job.attempts)
                self.requeue(job, last, url, delay)
            elif status == 400 and any(s in text.lower() for s in TOO_LONG):
                self.host.finish(job.pending, error=f"{url}: {last}")
            else:  # a bad request stays bad: no retry, and the next ones would fail the same way
                self.host.fail(CotforgeError(f"{url}: {last}"))
            return
        try:
            answer = json.loads(text)
        except ValueError:
            self.host.fail(CotforgeError(f"{url}: HTTP 200 but not JSON: {text[:300]!r}"))
            return
        self.take(job, server, answer)

    def take(self, job: Job, server: Server, answer: dict) -> None:
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))[:job.n]
        if job.n > 1 and (server.n_per_request is None or len(choices) < job.n):
            server.n_per_request = len(choices) >= job.n
        usage = answer.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        # Servers report one usage for all n choices: the prompt once, completion tokens summed. We split
        # the sum evenly (remainder to the first choices); per-choice counts are approximate when n > 1.
        total, count = int(usage.get("completion_tokens") or 0), max(len(choices), 1)
        slots = job.pending.slots
        self.host.inflight_ledger.answered(len(choices))
        for k, choice in enumerate(choices):
            slots[job.first + k] = Completion(choice_text(choice), choice.get("finish_reason") or "unknown",
                                              prompt_tokens, total // count + (k < total % count),
                                              choice_extra(choice))
        missing = [j for j in range(job.first, job.first + job.n) if slots[j] is None]
        if missing and len(choices) == 0 and job.n == 1:
            self.requeue(job, "answer without choices", server.url)
            return
        # Top up answers that came back short with single requests for the missing sample indices.
        self.host.queue_front([Job(job.pending, j, 1) for j in missing])
        if all(slot is not None for slot in slots) and not missing:
            self.host.finish(job.pending)


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
