"""`OpenAIEngine`: the public face of the openai engine, its asyncio loop, and its in-flight accounting.

The caller's thread submits and polls; one background thread runs an asyncio loop that dispatches
queued calls to the fleet (`fleet`) and sends them (`calls`). What is in flight is counted in one
place, `InFlight`: the sequences the scheduler sees as outstanding, and the sequences each server holds
(what the least-loaded choice and the concurrency cap read).
"""

from __future__ import annotations

import asyncio
import math
import os
import queue
import sys
import threading
import time

import aiohttp

from cotforge.engines.base import Engine, Finished, Request, SamplingParams, drain
from cotforge.engines.openai.calls import Calls, Job, Pending
from cotforge.engines.openai.fleet import Fleet, Reach, Server, reach, served_model, unreachable_line, v1
from cotforge.errors import CotforgeError

DEFAULT_BASE_URL = "https://api.openai.com/v1"  # the OpenAI SDK's default too
PER_SERVER_CONCURRENCY = 256  # vLLM's default max_num_seqs: enough to keep one server's batch full
STARTUP_POLL_S = 0.5  # first pause between asks while no server answers at the start (then doubling)


class InFlight:
    """Sequences in flight. `total` (read by the caller's thread) counts a sample off as soon as its own
    call answers, even while its request waits for siblings; `wakeup` then tells a caller waiting in
    poll that there is room to top up. Per-server counts live on each `Server` and change only here, on
    the loop's thread."""

    def __init__(self, wakeup: queue.Queue) -> None:
        self.total = 0
        self._lock = threading.Lock()
        self._wakeup = wakeup

    def submitted(self, count: int) -> None:
        with self._lock:
            self.total += count

    def answered(self, count: int) -> None:
        with self._lock:
            self.total -= count
        self._wakeup.put(None)  # wakes a caller waiting in poll: there is room to top up

    @staticmethod
    def sent(server: Server, count: int) -> None:
        server.inflight += count

    @staticmethod
    def returned(server: Server, count: int) -> None:
        server.inflight -= count


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, base_url: str | list[str] | None = None, api_key: str | None = None, model: str | None = None,
                 concurrency: int | None = None, timeout_s: float = 3600, connect_timeout_s: float = 10,
                 max_retries: int = 5, n_per_request: bool | None = False, backoff_s: float = 1.0,
                 backoff_max_s: float = 60.0, probe_interval_s: float = 10.0, probe_timeout_s: float = 10.0,
                 outage_s: float = 120.0, stream: bool | None = None, metrics_interval_s: float = 1.0) -> None:
        self.base_urls = self.validate_options({"base_url": base_url})
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.concurrency = concurrency or PER_SERVER_CONCURRENCY * len(self.base_urls)
        if self.concurrency < 1:
            raise CotforgeError("openai engine: concurrency must be at least 1")
        self.metrics_interval_s = metrics_interval_s  # 0: never read servers' /metrics (fleet.py)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.stream = stream  # None: stream only the calls whose samples cotforge watches (calls.Calls.streams)
        self.outage_s = outage_s  # how long a call rides out its servers' outage (refusals, 5xx) before giving up
        connect_s = min(connect_timeout_s, timeout_s)
        self._call_timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_s)
        # Every server is asked for its models at the start: none answering is one line now, not retries;
        # a fleet member that does not answer is named, and gets calls once its probe answers.
        reached = reach(self.base_urls, self._headers, connect_s or 10)
        if all(r.error is not None for r in reached):
            reached = self._wait_for_a_server(reached, model, connect_s or 10)
        self._unreachable = [r for r in reached if r.error is not None]
        for down in self._unreachable:
            print(f"cotforge: note: {down.url} cannot be reached ({down.error}); going on with the "
                  f"{len(reached) - len(self._unreachable)} of {len(reached)} servers that answer (it gets calls once "
                  f"it answers)", file=sys.stderr, flush=True)
        self.model = model or served_model([r for r in reached if r.error is None])
        self._n_default = n_per_request
        self._done: queue.Queue = queue.Queue()
        self.inflight_ledger = InFlight(self._done)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, name="openai-engine", daemon=True)
        self._setup_error: BaseException | None = None
        self._thread.start()
        self._ready.wait()
        if self._setup_error is not None:
            raise self._setup_error

    def _wait_for_a_server(self, reached: list[Reach], model: str | None, timeout_s: float) -> list[Reach]:
        """No server answers at the start: ride that out as an outage, for `outage_s`. A server started
        beside the run is often still loading its model: `vllm serve` binds its port at once but listens
        only once the model is loaded, so until then it refuses connections, like no server at all."""
        if self.outage_s <= 0:
            raise CotforgeError(unreachable_line(reached, model))
        started = time.monotonic()
        who = "the server cannot" if len(reached) == 1 else f"none of the {len(reached)} servers can"
        print(f"cotforge: note: {who} be reached yet ({reached[0].url}: {reached[0].error}); waiting up "
              f"to {self.outage_s:g} s for one to answer (a server still loading its model), then stopping "
              f"(--engine-option outage_s=N sets the wait)", file=sys.stderr, flush=True)
        pause = STARTUP_POLL_S
        while all(r.error is not None for r in reached):
            left = self.outage_s - (time.monotonic() - started)
            if left <= 0:
                raise CotforgeError(f"{unreachable_line(reached, model)}; waited {self.outage_s:g} s (outage_s)")
            time.sleep(min(pause, left))
            pause = min(2 * pause, max(self.probe_interval_s, STARTUP_POLL_S))
            reached = reach(self.base_urls, self._headers, timeout_s)
        print(f"cotforge: note: {next(r.url for r in reached if r.error is None)} answers after "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        return reached

    @staticmethod
    def validate_options(options: dict) -> list[str]:
        """The /v1 base URLs `base_url` names (one, a list, else $OPENAI_BASE_URL or OpenAI's); one line for
        one that is not an http(s) URL. Called before the run folder is made (engines.check_options)."""
        base_url = options.get("base_url")
        urls = base_url if isinstance(base_url, (list, tuple)) else [base_url or os.environ.get("OPENAI_BASE_URL")
                                                                      or DEFAULT_BASE_URL]
        if not urls:
            raise CotforgeError("openai engine: no base URL given")
        return [v1(u) for u in urls]

    @property
    def faults(self) -> dict:
        """Failed attempts by kind this session (connection, timeout, probe, http_429, http_5xx, bad_json,
        no_choices, empty_completion) and budgets restarted; the run's summary prints them."""
        return dict(self._calls.faults)

    # -- public, caller's thread -----------------------------------------------------------------
    @property
    def n_per_request(self) -> bool | None:
        """What the first server taught (tests and single-server callers read it)."""
        return self._fleet.servers[0].n_per_request

    @property
    def max_inflight(self) -> int:
        """Sequences to keep outstanding: `concurrency`, or less once servers' /metrics tell their batch
        sizes (each server's batch x 1.25: more would only queue at the server, behind which a prompt's
        next round waits; fleet.py). The scheduler reads it on every top-up."""
        fleet = getattr(self, "_fleet", None)
        return self.concurrency if fleet is None else min(self.concurrency, fleet.capacity())

    @property
    def inflight(self) -> int:
        """Sequences submitted and not answered yet (a sample counts off as soon as its own call returns)."""
        return self.inflight_ledger.total

    @property
    def early_stopped(self) -> int:
        """Samples cotforge's early stop ended this session (their streams closed)."""
        return self._calls.early_stopped

    @property
    def stream_events(self) -> int:
        """Server-sent events parsed this session (0 when no call streams)."""
        return self._calls.stream_events

    @property
    def moved(self) -> int:
        """Calls moved off a failed server (reported by tests and benchmarks)."""
        return self._calls.moved

    def submit(self, request: Request, params: SamplingParams) -> None:
        self.inflight_ledger.submitted(request.n)
        pending = Pending(request, params, [None] * request.n)
        self._loop.call_soon_threadsafe(self._enqueue_request, pending)

    def poll(self, timeout_s: float = 0.0) -> list[Finished]:
        return drain(self._done, timeout_s)

    def cancel(self, requests: list[Request]) -> None:
        """Drop their queued calls and close the connections of those in flight (vLLM's server aborts
        a request whose client disconnects, so the slots free at once)."""
        self._loop.call_soon_threadsafe(self._cancel, list(requests))

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
        servers = [Server(url, self._session(self.concurrency, self._call_timeout), n_per_request=self._n_default)
                   for url in self.base_urls]
        # Probes get a session of their own: behind a full pool of long calls they would wait for a free
        # connection, time out, and take a busy server for a dead one.
        probe_session = self._session(len(servers), aiohttp.ClientTimeout(total=self.probe_timeout_s))
        self._queue: list[Job] = []
        self._pending: dict[int, Pending] = {}  # submitted and not finished, for cancel
        self._closing = False
        self.wake = asyncio.Event()
        self._fleet = Fleet(servers, probe_session, self.probe_interval_s, lambda a: self._calls.backoff(a), self.wake,
                            share=math.ceil(self.concurrency / len(servers)), metrics_interval_s=self.metrics_interval_s)
        self._calls = Calls(self, self._fleet, self.model, self.max_retries, self.backoff_s, self.backoff_max_s,
                            self.outage_s, self.stream)
        now = time.monotonic()
        for server in servers:  # unreachable at the start: down until the probe finds it answering
            if any(down.url == server.url for down in self._unreachable):
                server.down_until, server.failures = now + self.probe_interval_s, 1
        self._tasks = {self._loop.create_task(self._dispatch()), self._loop.create_task(self._fleet.probe()),
                       self._loop.create_task(self._fleet.watch_metrics())}

    def _session(self, connections: int, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(headers=self._headers, timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=connections, limit_per_host=0))

    async def _shutdown(self) -> None:
        # The dispatcher stops on the flag too: Python 3.11's wait_for can swallow a cancellation that
        # lands as its wait ends, and a task still pending when the loop closes is reported at exit
        # ("Task was destroyed but it is pending!"), a second line under a run's one-line error.
        self._closing = True
        self.wake.set()
        tasks = list(self._tasks) + [t for s in self._fleet.servers for t in s.tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)  # let them unwind before the loop stops
        await self._fleet.close()

    def _cancel(self, requests: list[Request]) -> None:
        wanted = {id(r) for r in requests}
        pendings = {id(p): p for p in self._pending.values() if id(p.request) in wanted}
        if not pendings:
            return  # all finished already
        queued = [job for job in self._queue if id(job.pending) in pendings]
        self._queue = [job for job in self._queue if id(job.pending) not in pendings]
        for job in queued:
            self._calls.cancelled(job)
        for server in self._fleet.servers:
            for task, job in list(server.tasks.items()):
                if id(job.pending) in pendings:
                    job.cancelled = True
                    task.cancel()  # the call's CancelledError handler fills its slots as cancelled

    def _enqueue_request(self, pending: Pending) -> None:
        self._pending[id(pending)] = pending
        # Watched samples go one per call: closing a stream stops every sample in it.
        singles = all(s.n_per_request is False for s in self._fleet.servers) or pending.params.early_stop is not None
        if pending.request.n == 0:
            self.finish(pending)
        elif singles and pending.request.n > 1:
            self._queue.extend(Job(pending, j, 1) for j in range(pending.request.n))
        else:
            self._queue.append(Job(pending, 0, pending.request.n))
        self.wake.set()

    # -- what calls ask of the engine (calls.Host) ------------------------------------------------
    def queue_front(self, jobs: list[Job]) -> None:
        self._queue[0:0] = jobs
        self.wake.set()

    def fail(self, error: BaseException) -> None:
        self._done.put(error)

    def finish(self, pending: Pending, error: str | None = None) -> None:
        if pending.finished:
            return
        pending.finished = True
        self._pending.pop(id(pending), None)
        if error:
            self.inflight_ledger.answered(sum(slot is None for slot in pending.slots))
        self._done.put(Finished(pending.request, [] if error else list(pending.slots), error))

    def _call_done(self, task: asyncio.Task, server: Server, job: Job) -> None:
        server.tasks.pop(task, None)
        if task.cancelled() and not job.started and not self._closing:
            self._calls.never_started(job, server)

    async def _dispatch(self) -> None:
        fleet, ledger = self._fleet, self.inflight_ledger
        while not self._closing:
            now = time.monotonic()
            wait = None
            total = sum(s.inflight for s in fleet.servers)
            up = fleet.up(now)
            for job in list(self._queue):
                if job.not_before > now:
                    wait = min(wait or 1e9, job.not_before - now)
                    continue
                if not up:
                    wait = min(wait or 1e9, fleet.next_up_at() - now)
                    break
                if total + job.n > self.concurrency and total > 0:
                    break
                server = fleet.least_loaded(up, job.n)
                if server is None:
                    break  # every server holds its batch and headroom: the next answer wakes this loop
                self._queue.remove(job)
                ledger.sent(server, job.n)
                total += job.n
                job.started = False
                task = self._loop.create_task(self._calls.call(job, server))
                server.tasks[task] = job
                task.add_done_callback(lambda t, s=server, j=job: self._call_done(t, s, j))
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=max(wait, 0.001) if wait is not None else None)
            except TimeoutError:
                pass
