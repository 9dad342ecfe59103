"""`generate --executor ray`: N engine replicas on a Ray cluster behind the one `Engine` interface.

Choice: the driver runs cotforge's own streaming scheduler (`cotforge.generate.scheduler`) unchanged,
and `RayEngine` is its engine: each replica is a Ray actor holding a real engine (a vLLM engine on its
GPUs, tensor/pipeline parallel inside it as its engine options say; or an OpenAI-compatible client of
its share of the servers), and the driver sends each request to the least-loaded live replica.
Not `ray.data.llm`: its processors run a fixed dataset through the engine once, but rejection sampling
plans each prompt's next round from the verdicts of its last one, so the work is not known up front;
and not one scheduler per replica over a partition of the prompts: then each replica would own a
slice of the run folder and a dead replica's prompts would have to be re-planned by someone else.
With one scheduler, adaptive per-prompt sampling, budgets, seeds and the exact resume are the local
command's by construction: only the driver plans, judges and commits (one writer of the run folder),
replicas only generate.

Traffic: requests go to a replica in batches (one actor call per replica per scheduler cycle), and
each replica hands back everything finished since its last answer through one long-poll call, so the
driver waits on one object per replica, not one per request (hundreds per replica are in flight).

Cancels (issue 18: siblings of a prompt that has its accepted samples) go to the replica holding the
request, whose engine stops it; it comes back through the same drain as a `cancelled` record, so the
scheduler accounts for it exactly as in a local run. A cancelled request whose replica dies is handed
back cancelled, not sent again; one still waiting for a live replica is handed back at once.

Replicas that die: an actor whose process or node dies is restarted by Ray (`max_restarts`), and every
request it held is sent again, with the same seed, to the live replicas (or queued until one is back);
a request is handed to the scheduler once, so nothing is lost or generated into the run twice. A
replica whose engine fails the run (every server of its fleet gone) fails the command with its error.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from dataclasses import dataclass

from cotforge.engines.base import CANCELLED, Completion, Engine, Finished, Request, SamplingParams, get_engine
from cotforge.errors import CotforgeError

ENGINE_POLL_S = 0.005
DRAIN_WAIT_S = 0.05  # how long a replica holds a drain call open when nothing has finished


class EngineReplica:
    """A Ray actor: one engine driven by one pump thread; `submit` queues work, `drain` hands back results."""

    def __init__(self, engine_name: str, options: dict):
        self.engine = get_engine(engine_name, **options)
        self._incoming: queue.Queue = queue.Queue()
        self._cancels: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._tokens: dict[int, int] = {}  # id(request) -> the driver's token
        self._requests: dict[int, Request] = {}  # the driver's token -> request, while the engine has it
        # Cancels that overtook their submit (a threaded actor runs calls out of order); applied when
        # the submit arrives. A cancel of a request already finished stays here: one int, never used.
        self._wanted: set[int] = set()
        self._failure: BaseException | None = None
        threading.Thread(target=self._pump, name="engine-pump", daemon=True).start()

    def info(self) -> tuple[str, str, int]:
        return self.engine.name, self.engine.model, self.engine.max_inflight

    def submit(self, items: list[tuple[int, Request, SamplingParams]]) -> None:
        for item in items:
            self._incoming.put(item)

    def cancel(self, tokens: list[int]) -> None:
        self._cancels.put(tokens)  # the pump thread owns the engine: it cancels them

    def drain(self, wait_s: float = DRAIN_WAIT_S) -> list[tuple[int, list, str | None]]:
        """(token, completions, error) of every request finished since the last call."""
        out = []
        try:
            out.append(self._done.get(timeout=wait_s))
            while True:
                out.append(self._done.get_nowait())
        except queue.Empty:
            pass
        if self._failure is not None and not out:
            raise self._failure
        return out

    def _pump(self) -> None:
        # The engine is touched by this thread only: engines need not be thread-safe. Cancels are
        # matched to requests as either arrives (a set lookup each), not by scanning every cancel not
        # yet matched at every turn: those of requests that finished first stay in `_wanted` for good.
        while True:
            stop = []
            try:
                while True:
                    for token in self._cancels.get_nowait():
                        if token in self._requests:
                            stop.append(self._requests[token])
                        else:
                            self._wanted.add(token)
            except queue.Empty:
                pass
            try:
                while True:
                    token, request, params = self._incoming.get_nowait()
                    self._tokens[id(request)] = token
                    self._requests[token] = request
                    self.engine.submit(request, params)
                    if token in self._wanted:  # its cancel came first
                        self._wanted.discard(token)
                        stop.append(request)
            except queue.Empty:
                pass
            if stop:
                self.engine.cancel(stop)  # back as `cancelled` Finished records
            try:
                finished = self.engine.poll(ENGINE_POLL_S)
            except BaseException as error:  # noqa: BLE001 - a run-ending engine fault: drain raises it
                self._failure = error
                return
            for done in finished:
                token = self._tokens.pop(id(done.request))
                self._requests.pop(token, None)
                self._done.put((token, done.completions, done.error))


@dataclass
class _Sent:
    slot: int
    request: Request
    params: SamplingParams


class RayEngine(Engine):
    """Engine replicas on Ray (see the module docstring). `replica_options[i]` builds replica i."""

    def __init__(self, ray, engine_name: str, replica_options: list[dict], resources: dict | None = None):
        self.ray = ray
        resources = dict(resources or {"num_cpus": 1})
        group = resources.pop("placement_group", None)
        # Threaded actor: a drain call waits while submit calls come in.
        actor = ray.remote(EngineReplica)
        settings = {"max_restarts": -1, "max_task_retries": 0, "max_concurrency": 4, **resources}
        self.groups = [self._placement_group(group) for _ in replica_options] if group else []
        self.actors = [actor.options(**settings, **({"scheduling_strategy": self._in_group(self.groups[i])}
                                                    if group else {})).remote(engine_name, options)
                       for i, options in enumerate(replica_options)]
        # Replicas start (a vLLM replica loads its model) while the scheduler opens the run and starts
        # its checks; the first use of name, model or capacity waits for them.
        self._info_refs = [a.info.remote() for a in self.actors]
        self._infos: list | None = None
        self.load = [0] * len(self.actors)  # sequences in flight per replica
        self.live = [True] * len(self.actors)
        self.sent: dict[int, _Sent] = {}  # token -> where and what
        # id(request) -> its token while sent: a cancel finds its requests without scanning `sent`
        # (thousands in flight on a fleet, and the scheduler cancels at every accepted sample).
        self.token_of: dict[int, int] = {}
        self.sequences = 0  # sequences in `sent`: `inflight` is read every scheduler cycle
        self.outbox: dict[int, list] = {}  # slot -> items not yet sent to it
        self.cancel_box: dict[int, list[int]] = {}  # slot -> tokens to cancel there, not yet sent
        self.drains: dict = {}  # object ref of a replica's open drain call -> slot
        self.probes: dict = {}  # object ref -> slot of a replica being restarted
        self.backlog: deque[tuple[Request, SamplingParams]] = deque()
        self.cancelling: set[int] = set()  # tokens cancelled, not yet handed back
        self.handed: list[Finished] = []  # cancelled records to hand back at the next poll
        self._tokens = itertools.count()
        self.resent = 0  # requests sent again after their replica died
        self.restarts = 0

    def _placement_group(self, spec: dict):
        from ray.util.placement_group import placement_group

        return placement_group(spec["bundles"], strategy=spec.get("strategy", "PACK"))

    @staticmethod
    def _in_group(group):
        """The actor in the group's first bundle; vLLM's Ray workers, started from inside it, land in
        the group's bundles too (captured child tasks), which is where vLLM looks for its GPUs."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=0,
                                                placement_group_capture_child_tasks=True)

    def _ready(self) -> list:
        if self._infos is None:
            try:
                self._infos = self.ray.get(self._info_refs)
            except self.ray.exceptions.RayError as err:
                self.close()
                raise CotforgeError(f"--executor ray: an engine replica failed to start: {_cause(err)}") from None
        return self._infos

    @property
    def name(self) -> str:
        return self._ready()[0][0]

    @property
    def model(self) -> str:
        return self._ready()[0][1]

    @property
    def capacity(self) -> list[int]:
        """Sequences each replica keeps busy (its engine's `max_inflight`)."""
        return [max(1, info[2]) for info in self._ready()]

    @property
    def max_inflight(self) -> int:
        return sum(self.capacity)

    @property
    def inflight(self) -> int:
        return self.sequences + (sum(r.n for r, _ in self.backlog) if self.backlog else 0)

    def submit(self, request: Request, params: SamplingParams) -> None:
        live = [slot for slot, up in enumerate(self.live) if up]
        if not live:
            self.backlog.append((request, params))
            return
        capacity = self.capacity
        slot = min(live, key=lambda i: self.load[i] / capacity[i])
        token = next(self._tokens)
        self.load[slot] += request.n
        self.sent[token] = _Sent(slot, request, params)
        self.token_of[id(request)] = token
        self.sequences += request.n
        self.outbox.setdefault(slot, []).append((token, request, params))

    def cancel(self, requests: list[Request]) -> None:
        """Forward to the replicas holding them; requests still waiting for a live replica come back
        cancelled at the next poll. Requests already handed back are not in `sent`: nothing happens."""
        per_slot: dict[int, list[int]] = {}
        for request in requests:
            token = self.token_of.get(id(request))
            if token is not None and token not in self.cancelling:
                self.cancelling.add(token)
                per_slot.setdefault(self.sent[token].slot, []).append(token)
        for slot, tokens in per_slot.items():
            if self.live[slot]:  # sent after this slot's pending submits, in the next poll's order
                self.cancel_box.setdefault(slot, []).extend(tokens)
        if self.backlog:  # only while no replica is live
            wanted = {id(request) for request in requests}
            waiting = [item for item in self.backlog if id(item[0]) in wanted]
            for item in waiting:
                self.backlog.remove(item)
                self.handed.append(_cancelled(item[0]))

    def poll(self, timeout_s: float = 0.0) -> list[Finished]:
        for slot, items in self.outbox.items():
            self.actors[slot].submit.remote(items)  # a dead replica's items are resent from `sent`
        self.outbox = {}
        for slot, tokens in self.cancel_box.items():
            self.actors[slot].cancel.remote(tokens)
        self.cancel_box = {}
        handed, self.handed = self.handed, []
        open_slots = set(self.drains.values())
        for slot, up in enumerate(self.live):
            if up and slot not in open_slots and self.load[slot] > 0:
                self.drains[self.actors[slot].drain.remote()] = slot
        refs = [*self.drains, *self.probes]
        if not refs:
            return handed
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=0 if handed else timeout_s)
        if ready:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        out = handed
        for ref in ready:
            if ref in self.probes:
                self._probed(ref)
            else:
                out += self._drained(ref)
        return out

    def _drained(self, ref) -> list[Finished]:
        slot = self.drains.pop(ref)
        try:
            answers = self.ray.get(ref)
        except self.ray.exceptions.RayActorError:
            self._replica_died(slot)
            return []
        except self.ray.exceptions.RayTaskError as err:
            raise CotforgeError(f"engine replica {slot}: {_cause(err)}") from None
        out = []
        for token, completions, error in answers:
            sent = self._forget(token)
            if sent is None:  # answered by a replica that was given up on and came back: already resent
                continue
            self.load[slot] -= sent.request.n
            self.cancelling.discard(token)
            out.append(Finished(sent.request, completions, error))
        return out

    def _forget(self, token: int) -> _Sent | None:
        """`token` is no longer out: its record, or None if it was not (already handed back)."""
        sent = self.sent.pop(token, None)
        if sent is not None:
            self.token_of.pop(id(sent.request), None)
            self.sequences -= sent.request.n
        return sent

    def _replica_died(self, slot: int) -> None:
        if self.live[slot]:
            self.live[slot] = False
            self.restarts += 1
            self.probes[self.actors[slot].info.remote()] = slot  # answers once Ray has restarted it
        self.load[slot] = 0
        self.outbox.pop(slot, None)
        self.cancel_box.pop(slot, None)
        lost = [token for token, sent in self.sent.items() if sent.slot == slot]
        for token in lost:  # same request, same seed: the same samples, from another replica
            sent = self._forget(token)
            if token in self.cancelling:  # cancelled: nothing to generate again
                self.cancelling.discard(token)
                self.handed.append(_cancelled(sent.request))
                continue
            self.resent += 1
            self.submit(sent.request, sent.params)

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
        if self.groups:
            from ray.util.placement_group import remove_placement_group

            for group in self.groups:
                remove_placement_group(group)
        self.actors, self.groups, self.sent, self.drains, self.probes = [], [], {}, {}, {}
        self.token_of, self.sequences = {}, 0


def _cancelled(request: Request) -> Finished:
    """A request cancelled before any replica generated it: nothing generated, 0 tokens."""
    return Finished(request, [Completion("", CANCELLED, 0, 0) for _ in range(request.n)])


def _cause(err: Exception) -> str:
    cause = getattr(err, "cause", None)
    if isinstance(cause, CotforgeError):
        return str(cause)
    lines = [line.strip() for line in str(cause or err).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(err).__name__
