"""Any OpenAI-compatible server, or a fleet of them: vLLM serve, SGLang, llama.cpp's server, hosted APIs.

Streaming with asynchronous HTTP (aiohttp: with hundreds of connections open, httpx's async pool spent
the client's CPU on bookkeeping: 491 vs 8,841 calls in 15 s against the simulated server, 256 in
flight, same machine): an asyncio loop in one background thread keeps up to `concurrency`
sequences in flight (default 256 per server, what a vLLM server batches by default), spread over
`base_url` (one URL or a list: one server per node). Each call goes to the least-loaded server that
is up (sequences in flight; ties to the one listed first).

Chat requests go to `/v1/chat/completions`, `raw_prompt` requests to `/v1/completions`. By default
each sample is its own call (`n=1`, seed + j): a server frees a slot as each sequence ends, and a
client that counts a whole `n` group in flight until its longest member ends leaves those slots
empty (measured on the simulated server: 0.6 of 64 slots busy with groups of 4 at concurrency 72).
vLLM's prefix cache still computes the shared prompt once. `n_per_request=None` sends `n` where the
server honours it and learns from the first answer (llama.cpp's server returns one choice whatever
`n` says: short answers are topped up with single calls and that server gets singles from then on);
`True` always sends `n`.

Failures:
- 429 and 5xx: retried with exponential backoff and full jitter, honouring `Retry-After`, on whichever
  server is least loaded then.
- connection errors and timeouts: the server is marked down for a backoff period (doubling while it
  keeps failing) and the call moves to another server at once.
- a server that stops answering without closing its connections is found by a probe of `/v1/models`
  every `probe_interval_s` (while it has calls in flight); when the probe fails, its calls are
  cancelled and moved. So `timeout_s` can stay long enough for 32K-token answers (default 1 hour).
- a call that failed `max_retries + 1` times ends the run with one line naming the URL and the last
  error (the run folder resumes); 400 "prompt too long" answers come back as a per-request error
  (the scheduler quarantines that prompt); any other 4xx ends the run at once (a wrong model name
  would fail every call).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import queue
import random
import threading
import time
from dataclasses import dataclass, field

import aiohttp
import httpx

from cotforge.engines.base import Completion, Engine, Finished, Request, SamplingParams, drain
from cotforge.io.errors import CotforgeError

DEFAULT_BASE_URL = "https://api.openai.com/v1"  # the OpenAI SDK's default too
PER_SERVER_CONCURRENCY = 256  # vLLM's default max_num_seqs: enough to keep one server's batch full
TOO_LONG = ("maximum context length", "max_model_len", "context length", "too long", "longer than")


def _v1(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"  # accept both ".../v1" and the root


@dataclass(eq=False)
class _Server:
    url: str
    client: aiohttp.ClientSession
    inflight: int = 0  # sequences
    down_until: float = 0.0
    failures: int = 0  # consecutive transport failures: the down period doubles with each
    n_per_request: bool | None = None  # None: send n, learn from the first answer
    last_answer: float = 0.0  # monotonic time of the last answer of any kind
    tasks: dict = field(default_factory=dict)  # asyncio task -> the _Job it sends

    def up(self, now: float) -> bool:
        return self.down_until <= now


@dataclass(eq=False)
class _Job:
    """One HTTP call: `n` samples of a request starting at sample `first` (seed + first)."""

    pending: _Pending
    first: int
    n: int
    attempts: int = 0
    not_before: float = 0.0
    last_error: str = "no attempt"
    last_url: str = ""
    moved: bool = False  # set by the probe before it cancels the call


@dataclass(eq=False)
class _Pending:
    request: Request
    params: SamplingParams
    slots: list = field(default_factory=list)  # Completion per sample index, None until answered
    finished: bool = False


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, base_url: str | list[str] | None = None, api_key: str | None = None, model: str | None = None,
                 concurrency: int | None = None, timeout_s: float = 3600, connect_timeout_s: float = 10,
                 max_retries: int = 5, n_per_request: bool | None = False, backoff_s: float = 1.0,
                 backoff_max_s: float = 60.0, probe_interval_s: float = 10.0, probe_timeout_s: float = 10.0) -> None:
        urls = base_url if isinstance(base_url, (list, tuple)) else [base_url or os.environ.get("OPENAI_BASE_URL")
                                                                      or DEFAULT_BASE_URL]
        if not urls:
            raise CotforgeError("openai engine: no base URL given")
        self.base_urls = [_v1(u) for u in urls]
        self.base_url = self.base_urls[0]
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.concurrency = concurrency or PER_SERVER_CONCURRENCY * len(self.base_urls)
        if self.concurrency < 1:
            raise CotforgeError("openai engine: concurrency must be at least 1")
        self.max_inflight = self.concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self._timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        self._call_timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(connect_timeout_s, timeout_s))
        self.model = model or self._first_served_model()
        self.moved = 0  # calls moved off a failed server (reported by tests and benchmarks)
        self._n_default = n_per_request
        self._done: queue.Queue = queue.Queue()
        self._inflight = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, name="openai-engine", daemon=True)
        self._setup_error: BaseException | None = None
        self._thread.start()
        self._ready.wait()
        if self._setup_error is not None:
            raise self._setup_error

    # -- public, caller's thread -----------------------------------------------------------------
    @property
    def n_per_request(self) -> bool | None:
        """What the first server taught (tests and single-server callers read it)."""
        return self._servers[0].n_per_request

    @property
    def inflight(self) -> int:
        """Sequences submitted and not answered yet (a sample counts off as soon as its own call returns)."""
        return self._inflight

    def _answered(self, count: int) -> None:
        with self._lock:
            self._inflight -= count
        self._done.put(None)  # wakes a caller waiting in poll: there is room to top up

    def submit(self, request: Request, params: SamplingParams) -> None:
        with self._lock:
            self._inflight += request.n
        pending = _Pending(request, params, [None] * request.n)
        self._loop.call_soon_threadsafe(self._enqueue_request, pending)

    def poll(self, timeout_s: float = 0.0) -> list[Finished]:
        return drain(self._done, timeout_s)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    # -- the loop's thread -------------------------------------------------------------------------
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._setup())  # aiohttp sessions want a running loop
        except BaseException as error:  # noqa: BLE001 - raised in the caller's thread by __init__
            self._setup_error = error
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _setup(self) -> None:
        self._servers = [_Server(url, self._session(self.concurrency, self._call_timeout), n_per_request=self._n_default)
                         for url in self.base_urls]
        # Probes get a session of their own: behind a full pool of long calls they would wait for a free
        # connection, time out, and take a busy server for a dead one.
        self._probe_session = self._session(len(self._servers), aiohttp.ClientTimeout(total=self.probe_timeout_s))
        self._queue: list[_Job] = []
        self._wake = asyncio.Event()
        self._tasks = {self._loop.create_task(self._dispatch()), self._loop.create_task(self._probe())}

    def _session(self, connections: int, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(headers=self._headers, timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=connections, limit_per_host=0))

    async def _shutdown(self) -> None:
        for task in list(self._tasks) + [t for s in self._servers for t in s.tasks]:
            task.cancel()
        for server in self._servers:
            await server.client.close()
        await self._probe_session.close()

    def _enqueue_request(self, pending: _Pending) -> None:
        singles = all(s.n_per_request is False for s in self._servers)
        if pending.request.n == 0:
            self._finish(pending)
        elif singles and pending.request.n > 1:
            self._queue.extend(_Job(pending, j, 1) for j in range(pending.request.n))
        else:
            self._queue.append(_Job(pending, 0, pending.request.n))
        self._wake.set()

    def _requeue(self, job: _Job, error: str, url: str, delay: float = 0.0) -> None:
        job.attempts += 1
        job.last_error, job.last_url = error, url
        if job.attempts > self.max_retries:
            self._fail(CotforgeError(f"{url}: gave up after {job.attempts} attempts; last: {error}"))
            return
        job.not_before = time.monotonic() + delay
        self._queue.insert(0, job)  # a retried call goes before new work: its prompt waits on it
        self._wake.set()

    def _fail(self, error: BaseException) -> None:
        self._done.put(error)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** attempt))  # full jitter

    async def _dispatch(self) -> None:
        while True:
            now = time.monotonic()
            wait = None
            total = sum(s.inflight for s in self._servers)
            up = [s for s in self._servers if s.up(now)]
            for job in list(self._queue):
                if job.not_before > now:
                    wait = min(wait or 1e9, job.not_before - now)
                    continue
                if not up:
                    wait = min(wait or 1e9, min(s.down_until for s in self._servers) - now)
                    break
                if total + job.n > self.concurrency and total > 0:
                    break
                server = min(up, key=lambda s: s.inflight)  # least loaded; min keeps list order on ties
                self._queue.remove(job)
                server.inflight += job.n
                total += job.n
                task = self._loop.create_task(self._call(job, server))
                server.tasks[task] = job
                task.add_done_callback(lambda t, s=server: s.tasks.pop(t, None))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.001) if wait is not None else None)
            except TimeoutError:
                pass

    async def _call(self, job: _Job, server: _Server) -> None:
        request, params = job.pending.request, job.pending.params
        body: dict = {"model": self.model, "temperature": params.temperature, "top_p": params.top_p,
                      "max_tokens": params.max_tokens, "seed": request.seed + job.first}
        if job.n > 1:
            body["n"] = job.n
        if request.raw_prompt is not None:
            path, body["prompt"] = "/completions", request.raw_prompt
        else:
            path, body["messages"] = "/chat/completions", request.messages
        url = server.url + path
        try:
            async with server.client.post(url, json=body) as response:
                status, text, headers = response.status, await response.text(), response.headers
        except asyncio.CancelledError:
            server.inflight -= job.n
            if job.moved:  # the probe found the server dead: move the call
                job.moved = False
                self.moved += 1
                self._requeue(job, "server stopped answering (probe failed)", url)
            raise
        except TimeoutError as error:  # before ClientError: aiohttp's timeouts are both
            server.inflight -= job.n
            self._mark_down(server)
            self.moved += len(self._servers) > 1
            self._requeue(job, f"timeout ({type(error).__name__})", url)
            return
        except aiohttp.ClientError as error:
            server.inflight -= job.n
            self._mark_down(server)
            self.moved += len(self._servers) > 1
            self._requeue(job, f"connection error ({type(error).__name__}: {error})", url)
            return
        server.inflight -= job.n
        server.last_answer = time.monotonic()
        self._wake.set()
        server.failures = 0
        if status != 200:
            last = f"HTTP {status}: {text[:300]}"
            if status == 429 or status >= 500:
                retry_after = _retry_after_s(headers.get("retry-after"))
                delay = min(self.backoff_max_s, retry_after) if retry_after is not None else self._backoff(job.attempts)
                self._requeue(job, last, url, delay)
            elif status == 400 and any(s in text.lower() for s in TOO_LONG):
                self._finish(job.pending, error=f"{url}: {last}")
            else:  # a bad request stays bad: no retry, and the next ones would fail the same way
                self._fail(CotforgeError(f"{url}: {last}"))
            return
        try:
            answer = json.loads(text)
        except ValueError:
            self._fail(CotforgeError(f"{url}: HTTP 200 but not JSON: {text[:300]!r}"))
            return
        self._take(job, server, answer)

    def _take(self, job: _Job, server: _Server, answer: dict) -> None:
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))[:job.n]
        if job.n > 1 and (server.n_per_request is None or len(choices) < job.n):
            server.n_per_request = len(choices) >= job.n
        usage = answer.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        # Servers report one usage for all n choices: the prompt once, completion tokens summed. We split
        # the sum evenly (remainder to the first choices); per-choice counts are approximate when n > 1.
        total, count = int(usage.get("completion_tokens") or 0), max(len(choices), 1)
        slots = job.pending.slots
        self._answered(len(choices))
        for k, choice in enumerate(choices):
            slots[job.first + k] = Completion(_choice_text(choice), choice.get("finish_reason") or "unknown",
                                              prompt_tokens, total // count + (k < total % count),
                                              _choice_extra(choice))
        missing = [j for j in range(job.first, job.first + job.n) if slots[j] is None]
        if missing and len(choices) == 0 and job.n == 1:
            self._requeue(job, "answer without choices", server.url)
            return
        # Top up answers that came back short with single requests for the missing sample indices.
        self._queue[0:0] = [_Job(job.pending, j, 1) for j in missing]
        if all(slot is not None for slot in slots) and not missing:
            self._finish(job.pending)
        self._wake.set()

    def _finish(self, pending: _Pending, error: str | None = None) -> None:
        if pending.finished:
            return
        pending.finished = True
        if error:
            self._answered(sum(slot is None for slot in pending.slots))
        self._done.put(Finished(pending.request, [] if error else list(pending.slots), error))

    def _mark_down(self, server: _Server) -> None:
        now = time.monotonic()
        if server.up(now):
            server.down_until = now + max(self._backoff(server.failures), 0.001)
            server.failures += 1
        self._wake.set()

    async def _probe(self) -> None:
        """Find servers that hold calls but stopped answering; bring back servers that answer again."""
        while True:
            await asyncio.sleep(self.probe_interval_s)
            now = time.monotonic()
            for server in self._servers:
                if not server.tasks and server.up(now):
                    continue
                if now - server.last_answer < self.probe_interval_s:
                    continue  # it answered calls lately: alive, however slow a probe might be
                try:
                    async with self._probe_session.get(server.url + "/models") as response:
                        alive = response.status < 500
                except (TimeoutError, aiohttp.ClientError):
                    alive = False
                if alive:
                    if not server.up(time.monotonic()):
                        server.down_until = 0.0
                        self._wake.set()
                    continue
                self._mark_down(server)
                server.down_until = max(server.down_until, time.monotonic() + self.probe_interval_s)
                for task, job in list(server.tasks.items()):
                    job.moved = True
                    task.cancel()

    def _first_served_model(self) -> str:
        """The one model a local server serves (vLLM, llama.cpp); a choice among several is the user's."""
        errors = []
        for base in self.base_urls:  # a fleet serves one model: ask the first server that answers
            url = base + "/models"
            try:
                response = httpx.get(url, headers=self._headers, timeout=self._timeout.connect or 10)
                response.raise_for_status()
                served = [entry["id"] for entry in response.json()["data"]]
            except (httpx.HTTPError, KeyError, TypeError, ValueError) as error:
                errors.append(f"{url}: {error}")
                continue
            if len(served) != 1:
                raise CotforgeError(f"{url}: no model given and the server lists {len(served)} "
                                    f"({', '.join(served[:5])}); pass model=NAME")
            return served[0]
        raise CotforgeError(f"{errors[0].split(': ', 1)[0]}: no model given and none could be listed "
                            f"({'; '.join(e.split(': ', 1)[1] for e in errors)}); pass model=NAME")


def _choice_text(choice: dict) -> str:
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


def _choice_extra(choice: dict) -> dict:
    message = choice.get("message") or {}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return {"reasoning_content": reasoning} if reasoning else {}


def _retry_after_s(value: str | None) -> float | None:
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
