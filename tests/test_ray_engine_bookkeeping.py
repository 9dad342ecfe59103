"""RayEngine's driver-side bookkeeping and EngineReplica's pump, without a Ray cluster.

`RayEngine` takes its `ray` module as an argument; here that is a stand-in whose actors answer in
this process (a Ray cluster costs a minute of CPU to start, and these are about the driver's own
dictionaries: which token a cancel goes to, what is in flight, what a dead replica's requests
become). The real cluster runs in tests/test_ray_generate.py. A cancel must cost the same with 500
or 20,000 requests in flight (it scanned every one: the scheduler cancels at every accepted sample).
"""

from __future__ import annotations

import time

import pytest

from cotforge.cluster.engine import EngineReplica, RayEngine
from cotforge.engines import base
from cotforge.engines.base import CANCELLED, Completion, Engine, Finished, Request, SamplingParams

PARAMS = SamplingParams()


class FakeRay:
    """What RayEngine uses of `ray`; every call runs at once in this process."""

    class exceptions:
        class RayError(Exception):
            pass

        class RayActorError(RayError):
            pass

        class RayTaskError(RayError):
            pass

    def __init__(self, capacity: int = 100_000):
        self.capacity, self.actors = capacity, []

    def remote(self, cls):
        ray = self

        class Options:
            def options(self, **settings):
                return self

            def remote(self, engine_name, options):
                actor = FakeReplica(ray, len(ray.actors))
                ray.actors.append(actor)
                return actor

        return Options()

    def get(self, ref):
        return [self.get(r) for r in ref] if isinstance(ref, list) else ref()

    def wait(self, refs, num_returns=1, timeout=None):
        return list(refs), []

    def kill(self, actor):
        pass


class Method:
    """An actor method: runs when called, as Ray would run it; the returned ref gives its result."""

    def __init__(self, call):
        self.call = call

    def remote(self, *args):
        try:
            result = self.call(*args)
        except FakeRay.exceptions.RayError as error:
            failure = error

            def ref():
                raise failure
            return ref
        return lambda: result


class FakeReplica:
    """Holds what it is sent; answers cancels with `cancelled` records; `dead` makes drains fail."""

    def __init__(self, ray: FakeRay, slot: int):
        self.ray, self.slot, self.dead = ray, slot, False
        self.held: dict[int, Request] = {}
        self.cancels: list[int] = []
        self.answers: list = []
        self.info = Method(lambda: ("fake", "fake", ray.capacity))
        self.submit = Method(lambda items: self.held.update({token: request for token, request, _ in items}))
        self.cancel = Method(self._cancel)
        self.drain = Method(self._drain)

    def _cancel(self, tokens):
        self.cancels += tokens
        for token in tokens:
            if token in self.held:
                request = self.held.pop(token)
                self.answers.append((token, [Completion("", CANCELLED, 1, 2)] * request.n, None))

    def _drain(self):
        if self.dead:
            raise FakeRay.exceptions.RayActorError("the replica died")
        answers, self.answers = self.answers, []
        return answers


def requests(count: int, start: int = 0) -> list[Request]:
    return [Request(key=f"p{i}", messages=[], n=1 + i % 2, seed=i, first_index=0) for i in range(start, start + count)]


def submitted(count: int) -> tuple[FakeRay, RayEngine, list[Request]]:
    """Two fake replicas holding `count` requests between them (not polled yet)."""
    ray = FakeRay()
    engine = RayEngine(ray, "fake", [{}, {}])
    sent = requests(count)
    for request in sent:
        engine.submit(request, PARAMS)
    return ray, engine, sent


def test_a_cancel_goes_to_the_replica_holding_each_request_and_inflight_follows():
    ray, engine, sent = submitted(3000)
    assert engine.poll() == [] and engine.inflight == sum(r.n for r in sent)
    held = {id(r): (actor.slot, token) for actor in ray.actors for token, r in actor.held.items()}
    assert len(held) == 3000 and {slot for slot, _ in held.values()} == {0, 1}  # both replicas got some
    chosen = [sent[5], sent[17], sent[2999]]
    engine.cancel(chosen + requests(1, start=9999))  # one that was never sent: nothing to do
    back = engine.poll()
    assert {id(f.request) for f in back} == {id(r) for r in chosen}
    assert all(c.finish_reason == CANCELLED for f in back for c in f.completions)
    for actor in ray.actors:  # each cancel went to its own replica, once, by its token
        assert sorted(actor.cancels) == sorted(held[id(r)][1] for r in chosen if held[id(r)][0] == actor.slot)
    assert engine.inflight == sum(r.n for r in sent) - sum(r.n for r in chosen)
    engine.cancel(chosen)  # already handed back: nothing is sent again
    assert engine.poll() == [] and sum(len(actor.cancels) for actor in ray.actors) == 3


def test_a_dead_replicas_requests_are_resent_and_its_cancelled_ones_handed_back():
    ray, engine, sent = submitted(40)
    engine.poll()
    first, second = ray.actors
    on_first = list(first.held.values())
    cut = on_first[0]
    engine.cancel([cut])  # its cancel is still to be sent when the replica dies
    first.dead = True
    back = engine.poll()
    assert [f.request for f in back] == [] or all(f.request is cut for f in back)
    back += engine.poll()  # the cancelled one comes back cancelled, the others go to the live replica
    assert [f.request for f in back] == [cut] and back[0].completions[0].finish_reason == CANCELLED
    engine.poll()
    assert {id(r) for r in on_first[1:]} <= {id(r) for r in second.held.values()}
    assert engine.resent == len(on_first) - 1 and engine.inflight == sum(r.n for r in sent) - cut.n
    moved = on_first[1]  # a cancel of a resent request goes to where it is now, under its new token
    engine.cancel([moved])
    back = engine.poll()
    assert [f.request for f in back] == [moved] and moved not in second.held.values()


def test_a_cancel_costs_the_same_with_500_or_20000_in_flight():
    def cancel_cpu(in_flight: int) -> float:
        _, engine, sent = submitted(in_flight)
        engine.poll()
        start = time.process_time()
        for request in sent[:500]:  # one at a time, as the scheduler does at each accepted sample
            engine.cancel([request])
            engine.inflight  # noqa: B018 - read every scheduler cycle
        return time.process_time() - start

    small, large = cancel_cpu(500), cancel_cpu(20_000)
    # Scanning every request in flight made the large case ~40x the small one.
    assert large < 5 * small + 0.05, (small, large)


class HeldEngine(Engine):
    """Finishes nothing by itself: only cancels come back (the replica's pump calls it on its thread)."""

    name = model = "held"
    max_inflight = 100

    def __init__(self):
        self.held, self.out, self.closed = {}, [], False

    @property
    def inflight(self):
        return len(self.held)

    def submit(self, request, params):
        self.held[id(request)] = request

    def cancel(self, requests):
        for request in requests:
            if self.held.pop(id(request), None) is not None:
                self.out.append(Finished(request, [Completion("", CANCELLED, 0, 0)] * request.n))

    def poll(self, timeout_s=0.0):
        if self.closed:
            raise SystemExit("closed")  # ends the replica's pump thread (it keeps the error for drain)
        out, self.out = self.out, []
        if not out and timeout_s:
            time.sleep(timeout_s)  # a real engine's poll waits this long for work: the pump's cadence
        return out


@pytest.fixture
def replica(monkeypatch):
    monkeypatch.setitem(base.ENGINES, "held", f"{__name__}:HeldEngine")
    replica = EngineReplica("held", {})
    yield replica
    replica.engine.closed = True


def drain_until(replica, count: int) -> list:
    got, deadline = [], time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        got += replica.drain(wait_s=0.2)  # waits on the replica's results queue
    return got


def test_the_replica_matches_cancels_to_requests_in_either_order(replica):
    early, late, finished_first = requests(3)
    replica.cancel([1])  # its cancel overtook its submit (a threaded actor runs calls out of order)
    replica.submit([(1, early, PARAMS), (2, late, PARAMS)])
    replica.cancel([2, 77])  # 77: a request that already finished elsewhere; stays an unused int
    got = drain_until(replica, 2)
    assert sorted(token for token, _, _ in got) == [1, 2]
    assert all(c.finish_reason == CANCELLED for _, completions, _ in got for c in completions)
    assert replica._wanted == {77} and replica.engine.held == {}
    replica.submit([(3, finished_first, PARAMS)])
    replica.cancel([3])  # cancelled after it arrived
    assert [token for token, _, _ in drain_until(replica, 1)] == [3] and replica._wanted == {77}
