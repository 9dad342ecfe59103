"""`filter --executor ray`: the check chain over a Ray cluster, into the same run folder.

Built on Ray Core actors rather than Ray Data. The run folder's unit of resume is the input chunk
(chunk i commits as `samples/part-i.parquet`); keeping those boundaries and names is what lets a rerun
skip committed chunks, lets `cotforge query` read a live run, and lets a run move between executors.
Ray Data re-blocks its input and names its output files itself, so it would need a second layout; and
each worker must keep its supervised check pool (forkserver processes with the check modules loaded)
across chunks, which an actor does by construction.

- The driver (the `cotforge` process) reads and normalizes the input, writes quarantine shards, is the
  only writer of `manifest.json`, and hands each chunk not yet committed to the least loaded actor, at
  most two per actor in flight (input is read as fast as the cluster consumes it, no faster).
- Each `ChunkJudge` actor (one CPU) holds the same `Chain` the local executor uses, with one check
  process: the same per-item hard limits (a check that overruns is killed and gets its `timeout`
  verdict, the actor goes on), the same verdicts. It commits the chunk's samples shard itself with the
  same atomic write (temp names carry host and pid, so writers on several nodes never share one).
- An actor whose process dies (killed, out of memory, node lost) is restarted by Ray and its pending
  chunks are retried; a chunk whose shard landed before the death is not judged twice (the actor looks
  for the shard first). A driver killed mid-run takes its actors with it; the rerun skips what is
  committed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Self

from cotforge.checks.chain import Chain, CheckSpec
from cotforge.cluster.session import RaySession, shared_folder_problem
from cotforge.executors import Committed, Job, judge_chunk
from cotforge.errors import CotforgeError
from cotforge.io.rundir import RunDir

IN_FLIGHT_PER_ACTOR = 2  # one judging, one queued: an actor never waits for the driver between chunks
TASK_RETRIES = 3  # per chunk, across actor deaths; then the command stops (a rerun resumes)


class ChunkJudge:
    """A Ray actor: a supervised check pool that judges whole chunks and commits their shards."""

    def __init__(self, specs: list[CheckSpec], run_path: str, allow_unverified: bool | None = None):
        self.problem = shared_folder_problem(run_path)
        self.run = RunDir(run_path)
        try:  # a node without a check's dependency: one line from ready(), not an actor that dies
            self.chain = Chain(specs, jobs=1, allow_unverified=allow_unverified)
        except CotforgeError as err:
            self.chain, self.problem = Chain([], jobs=0), self.problem or f"on a Ray worker node: {err}"
        if self.problem is None:
            self.chain.start()

    def ready(self) -> str | None:
        return self.problem

    def judge(self, index: int, samples: list[dict]) -> tuple[int, dict, dict]:
        """Commit chunk `index`; (accepted, infrastructure events, judge calls) of this chunk."""
        if self.problem:
            raise CotforgeError(self.problem)
        path = self.run.shard_path("samples", index)
        if path.exists():  # a retry after this chunk was committed by an actor that then died
            import pyarrow.compute as pc
            import pyarrow.parquet as pq

            return pc.sum(pq.read_table(path, columns=["accepted"])["accepted"]).as_py() or 0, {}, {}
        infrastructure, judges = Counter(self.chain.infrastructure()), _counters(self.chain.stats)
        accepted = judge_chunk(self.chain, self.run, index, samples)
        judges_after = _counters(self.chain.stats)
        return (accepted, dict(Counter(self.chain.infrastructure()) - infrastructure),
                {name: dict(judges_after[name] - judges.get(name, Counter())) for name in judges_after})


def _counters(stats: dict) -> dict[str, Counter]:
    return {name: Counter(counts) for name, counts in stats.items()}


class RayExecutor:
    """The filter's chunk executor on Ray (`cotforge.executors` picks it by name) (see the module docstring); `workers` actors of one CPU."""

    def __init__(self, specs: list[CheckSpec], run: RunDir, workers: int | None = None,
                 address: str | None = None, allow_unverified: bool | None = None):
        self.specs, self.run_path = specs, str(Path(run.path).resolve())
        self.allow_unverified = allow_unverified  # the verification stage, as the local chain has it
        self.workers = workers
        self.session = RaySession(address, num_cpus=workers)
        self.actors: list = []
        self.pending: dict = {}  # object ref -> (actor slot, Committed without its accepted count)
        self._infrastructure: Counter = Counter()  # summed over the workers' chunks
        self._judges: dict[str, Counter] = {}

    @classmethod
    def for_job(cls, job: Job) -> RayExecutor:
        """`jobs` is the number of Ray workers (one CPU each; default every CPU of the cluster)."""
        return cls(job.specs, job.run, workers=job.jobs, address=job.address, allow_unverified=job.allow_unverified)

    def __enter__(self) -> Self:
        self.session.__enter__()
        try:
            self._start_actors()
        except BaseException:
            self.session.__exit__()
            raise
        return self

    def _start_actors(self) -> None:
        ray = self.session.ray
        cpus = self.session.cpus()
        workers = self.workers or cpus
        if workers < 1 or workers > cpus:
            raise CotforgeError(f"--jobs {workers}: the Ray cluster has {cpus} CPUs (one per worker)")
        actor = ray.remote(ChunkJudge).options(num_cpus=1, max_restarts=-1, max_task_retries=TASK_RETRIES)
        self.actors = [actor.remote(self.specs, self.run_path, self.allow_unverified) for _ in range(workers)]
        problems = [p for p in ray.get([a.ready.remote() for a in self.actors]) if p]
        if problems:
            raise CotforgeError(problems[0])

    def submit(self, index: int, samples: list[dict], rows_read: int) -> list[Committed]:
        done = []
        while len(self.pending) >= IN_FLIGHT_PER_ACTOR * len(self.actors):
            done += self._collect(timeout=None)
        load = [0] * len(self.actors)
        for slot, _ in self.pending.values():
            load[slot] += 1
        slot = load.index(min(load))
        ref = self.actors[slot].judge.remote(index, samples)
        self.pending[ref] = (slot, Committed(index, rows_read, 0))
        return done + self._collect(timeout=0)

    def finish(self) -> list[Committed]:
        done = []
        while self.pending:
            done += self._collect(timeout=None)
        return done

    def _collect(self, timeout: float | None) -> list[Committed]:
        ray = self.session.ray
        ready, _ = ray.wait(list(self.pending), num_returns=1 if timeout is None else len(self.pending),
                            timeout=timeout)
        done = []
        for ref in ready:
            _, chunk = self.pending.pop(ref)
            try:
                chunk.accepted, infrastructure, judges = ray.get(ref)
            except ray.exceptions.RayError as err:
                raise CotforgeError(f"filter: chunk {chunk.index} failed on the Ray cluster "
                                    f"({type(err).__name__}: {_last_line(err)}); rerun the same command "
                                    f"to resume") from None
            self._infrastructure.update(infrastructure)
            for name, counts in judges.items():
                self._judges.setdefault(name, Counter()).update(counts)
            done.append(chunk)
        return done

    def infrastructure(self) -> dict:
        """Check-worker deaths and retries inside the Ray workers (as the local chain reports them)."""
        return {key: self._infrastructure.get(key, 0) for key in ("worker_deaths", "retried", "died_twice")}

    @property
    def stats(self) -> dict:
        return {name: dict(counts) for name, counts in self._judges.items()}

    def __exit__(self, exc_type, exc, tb) -> None:
        ray = self.session.ray
        if isinstance(exc, CotforgeError) and self.pending:
            # A bad input row stopped the run: let the chunks before it commit, as the local executor does.
            ray.wait(list(self.pending), num_returns=len(self.pending))
        for actor in self.actors:
            ray.kill(actor)
        self.actors, self.pending = [], {}
        self.session.__exit__()


def _last_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
