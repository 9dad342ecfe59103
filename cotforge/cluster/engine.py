"""`generate --executor ray`: N engine replicas on a Ray cluster behind the one `Engine` interface.

Choice: the driver runs cotforge's own streaming scheduler (`cotforge.generate.scheduler`) unchanged,
and `RayEngine` is its engine: each replica is a Ray actor holding a real engine (a vLLM engine on its
GPUs, tensor/pipeline parallel inside it as its engine options say; or an OpenAI-compatible client of
its share of the servers), and the driver sends each request to the least-loaded live replica.
Not `ray.data.llm`: its processors run a fixed dataset through the engine once, but rejection sampling
plans each prompt's next wave from the verdicts of its last one, so the work is not known up front;
and not one scheduler per replica over a partition of the prompts: then each replica would own a
slice of the run folder and a dead replica's prompts would have to be re-planned by someone else.
With one scheduler, adaptive per-prompt sampling, budgets, seeds and the exact resume are the local
command's by construction: only the driver plans, judges and commits (one writer of the run folder),
replicas only generate.

Replicas that die: an actor whose process or node dies is restarted by Ray (`max_restarts`), and every
request it held is sent again, with the same seed, to the live replicas (or queued until one is back);
a request is handed to the scheduler once, so nothing is lost or generated into the run twice. A
replica whose engine fails the run (every server of its fleet gone) fails the command with its error.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from dataclasses import dataclass

from cotforge.engines.base import Engine, Finished, Request, SamplingParams, get_engine
from cotforge.io.errors import CotforgeError

POLL_S = 0.005


class EngineReplica:
    """A Ray actor (async): one engine, driven by one pump thread; `run` answers when its request is done."""

    def __init__(self, engine_name: str, options: dict):
        self.engine = get_engine(engine_name, **options)
        self._submissions: queue.Queue = queue.Queue()
        self._waiting: dict[int, tuple[asyncio.Future, asyncio.AbstractEventLoop]] = {}
        self._failure: BaseException | None = None
        threading.Thread(target=self._pump, name="engine-pump", daemon=True).start()

    def info(self) -> tuple[str, str, int]:
        return self.engine.name, self.engine.model, self.engine.max_inflight

    async def run(self, request: Request, params: SamplingParams) -> Finished:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting[id(request)] = (future, loop)
        self._submissions.put((request, params))
        return await future

    def _pump(self) -> None:
        # The engine is touched by this thread only: engines need not be thread-safe.
        while True:
            try:
                while True:
                    self.engine.submit(*self._submissions.get_nowait())
            except queue.Empty:
                pass
            try:
                finished = self.engine.poll(POLL_S)
            except BaseException as error:  # noqa: BLE001 - a run-ending engine fault goes to every caller
                for future, loop in self._waiting.values():
                    loop.call_soon_threadsafe(_settle, future, None, error)
                self._waiting.clear()
                self._failure = error
                return
            for done in finished:
                future, loop = self._waiting.pop(id(done.request))
                loop.call_soon_threadsafe(_settle, future, done, None)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass
class _Sent:
    slot: int
    request: Request
    params: SamplingParams


class RayEngine(Engine):
    """Engine replicas on Ray (see the module docstring). `replica_options[i]` builds replica i."""

    def __init__(self, ray, engine_name: str, replica_options: list[dict], resources: dict | None = None):
        self.ray = ray
        actor = ray.remote(EngineReplica).options(max_restarts=-1, max_task_retries=0, max_concurrency=100_000,
                                                  **(resources or {"num_cpus": 1}))
        self.actors = [actor.remote(engine_name, options) for options in replica_options]
        try:
            infos = ray.get([a.info.remote() for a in self.actors])
        except ray.exceptions.RayError as err:
            self.close()
            raise CotforgeError(f"--executor ray: an engine replica failed to start: {_cause(err)}") from None
        self.name, self.model = infos[0][0], infos[0][1]
        self.capacity = [max(1, info[2]) for info in infos]
        self.max_inflight = sum(self.capacity)
        self.load = [0] * len(self.actors)  # sequences in flight per replica
        self.live = [True] * len(self.actors)
        self.sent: dict = {}  # object ref -> _Sent
        self.probes: dict = {}  # object ref -> slot of a replica being restarted
        self.backlog: deque[tuple[Request, SamplingParams]] = deque()
        self.resent = 0  # requests sent again after their replica died
        self.restarts = 0

    @property
    def inflight(self) -> int:
        return sum(s.request.n for s in self.sent.values()) + sum(r.n for r, _ in self.backlog)

    def submit(self, request: Request, params: SamplingParams) -> None:
        live = [slot for slot, up in enumerate(self.live) if up]
        if not live:
            self.backlog.append((request, params))
            return
        slot = min(live, key=lambda i: self.load[i] / self.capacity[i])
        self.load[slot] += request.n
        self.sent[self.actors[slot].run.remote(request, params)] = _Sent(slot, request, params)

    def poll(self, timeout_s: float = 0.0) -> list[Finished]:
        refs = [*self.sent, *self.probes]
        if not refs:
            return []
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        out = []
        for ref in ready:
            if ref in self.probes:
                self._probed(ref)
            else:
                out += self._answered(ref)
        return out

    def _answered(self, ref) -> list[Finished]:
        sent = self.sent.pop(ref)
        self.load[sent.slot] -= sent.request.n
        try:
            done = self.ray.get(ref)
        except self.ray.exceptions.RayActorError:
            self._replica_died(sent.slot)
            self.resent += 1
            self.submit(sent.request, sent.params)  # same request, same seed: the same samples
            return []
        except self.ray.exceptions.RayTaskError as err:
            raise CotforgeError(f"engine replica {sent.slot}: {_cause(err)}") from None
        return [Finished(sent.request, done.completions, done.error)]

    def _replica_died(self, slot: int) -> None:
        if self.live[slot]:
            self.live[slot] = False
            self.restarts += 1
            self.probes[self.actors[slot].info.remote()] = slot  # answers once Ray has restarted it

    def _probed(self, ref) -> None:
        slot = self.probes.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            if not any(self.live) and not self.probes:
                raise CotforgeError(f"--executor ray: every engine replica is gone (last: {_cause(err)})") from None
            return  # this replica stays out; the others carry on
        self.live[slot] = True
        while self.backlog:
            self.submit(*self.backlog.popleft())

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors, self.sent, self.probes = [], {}, {}


def _cause(err: Exception) -> str:
    cause = getattr(err, "cause", None)
    if isinstance(cause, CotforgeError):
        return str(cause)
    lines = [line.strip() for line in str(cause or err).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(err).__name__
