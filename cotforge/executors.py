"""Where `filter` judges its chunks: the executor interface, the local executor, and the names the
filter picks from.

An executor takes the filter's chunks in input order (`submit`), judges each with the check chain and
commits it as `samples/part-i.parquet` (`judge_chunk`, the chunk's commit point), and hands back the
chunks committed so far (`Committed`). The local one judges on this machine's supervised process pool;
the Ray one (`cotforge.cluster.filter`) plugs in here by name. The filter imports this module only,
never an executor's own module, so `cluster/` builds on this floor and nothing here points back at it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, Self

from cotforge.checks.chain import Chain, CheckSpec, verdict_rows
from cotforge.errors import CotforgeError
from cotforge.io.rundir import RunDir
from cotforge.schema import SAMPLE_SCHEMA, to_table


@dataclass
class Committed:
    """A chunk whose samples shard is committed: input rows it covered, samples it accepted."""

    index: int
    rows_read: int
    accepted: int = 0


def judge_chunk(chain: Chain, run: RunDir, index: int, samples: list[dict]) -> int:
    """Judge one chunk and commit its samples shard (the chunk's commit point); returns accepted count."""
    rows = verdict_rows(samples, chain.run(samples), chain.names)
    run.write_shard("samples", index, to_table(rows, SAMPLE_SCHEMA))
    return sum(r["accepted"] for r in rows)


@dataclass
class Job:
    """What an executor is built from: the filter's chain (names, judges, the local pool), the check
    specs (for workers that build their own chain), the run, and the executor's own options."""

    chain: Chain
    specs: list[CheckSpec]
    run: RunDir
    jobs: int | None = None
    address: str | None = None
    allow_unverified: bool = False


class Executor(Protocol):
    @classmethod
    def for_job(cls, job: Job) -> Executor: ...

    def submit(self, index: int, samples: list[dict], rows_read: int) -> list[Committed]: ...

    def finish(self) -> list[Committed]: ...

    def infrastructure(self) -> dict: ...

    @property
    def stats(self) -> dict: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc) -> None: ...


class LocalExecutor:
    """Judges each chunk as it is submitted, in this machine's supervised process pool."""

    def __init__(self, chain: Chain, run: RunDir):
        self.chain, self.run = chain, run

    @classmethod
    def for_job(cls, job: Job) -> LocalExecutor:
        return cls(job.chain, job.run)

    def submit(self, index: int, samples: list[dict], rows_read: int) -> list[Committed]:
        return [Committed(index, rows_read, judge_chunk(self.chain, self.run, index, samples))]

    def finish(self) -> list[Committed]:
        return []

    def infrastructure(self) -> dict:
        return self.chain.infrastructure()

    @property
    def stats(self) -> dict:
        return self.chain.stats

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.chain.close()


# name -> "module:class"; imported only when picked (Ray's import costs seconds, and needs the extra).
EXECUTORS = {"local": f"{__name__}:LocalExecutor", "ray": "cotforge.cluster.filter:RayExecutor"}


def check_executor(name: str) -> None:
    if name not in EXECUTORS:
        raise CotforgeError(f"--executor {name!r}: choose {' or '.join(EXECUTORS)}")


def executor_for(name: str, job: Job) -> Executor:
    check_executor(name)
    module, cls = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls).for_job(job)
