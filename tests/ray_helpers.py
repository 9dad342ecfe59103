"""Helpers for the Ray tests: a paced test check, sample data, a tiny two-node cluster, run readers.

This module is imported by Ray worker processes too (the chain imports a check's module by name), so
it keeps its imports light and puts nothing heavy at module level.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq

from cotforge.checks.base import Check, Verdict, register

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@register
class PacedCheck(Check):
    """Test-only check: takes `pause_s` per sample (so a run lasts long enough to be killed mid-way),
    and hangs on a completion containing HANG (so its hard limit must fire)."""

    name = "test_paced"
    timeout_s = 1.0
    pause_s: float = 0.0

    def check(self, sample: dict) -> Verdict:
        if "HANG" in sample["completion"]:
            time.sleep(60)
        time.sleep(self.pause_s)
        return Verdict.ok(f"ok after {self.pause_s:g}s")


def write_samples(path: Path, gsm8k_solutions: Path, questions: int | None, extra: list[dict] = (),
                  copies: int = 1) -> int:
    """GSM8K's labelled model solutions as samples (4 per question, `copies` times under distinct ids),
    plus `extra` rows; returns rows."""
    from gsm8k_labelled import read_labelled_solutions

    rows = [{"id": f"q{q.index}-{k}" + (f"-{copy}" if copy else ""), "prompt": q.question, "completion": solution,
             "gold": q.gold}
            for copy in range(copies)
            for q in read_labelled_solutions(gsm8k_solutions, limit=questions)
            for k, (solution, _) in enumerate(q.solutions)]
    rows += list(extra)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return len(rows)


def judged(run: Path) -> dict[str, tuple]:
    """id -> (accepted, answer, verdicts) over every committed samples shard."""
    table = {}
    for shard in sorted((run / "samples").glob("part-*.parquet")):
        for row in pq.read_table(shard, columns=["id", "accepted", "answer", "verdicts"]).to_pylist():
            assert row["id"] not in table, f"{row['id']} committed twice"
            table[row["id"]] = (row["accepted"], row["answer"],
                                [(v["check"], v["passed"], v["score"], v["reason"]) for v in row["verdicts"]])
    return table


def ray_env() -> dict[str, str]:
    """Environment for processes that start Ray nodes: workers must import cotforge and this module.

    PYTHONFAULTHANDLER: a Ray driver of these tests once died of SIGSEGV after its work was done (at
    `ray.shutdown()` or the interpreter's exit, in one CI run of many); a crash then prints its stack."""
    paths = [str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "PYTHONFAULTHANDLER": "1"}


@contextmanager
def two_node_cluster(cpus_per_node: int = 1):
    """A real two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`), shut down after."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ray_env()["PYTHONPATH"]  # the node processes inherit it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus_per_node, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=cpus_per_node)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def actor_pids(title: str = "ray::ChunkJudge", under: int | None = None) -> list[int]:
    """Pids of live Ray actor processes whose process title starts with `title`; with `under`, only
    descendants of that pid (one cluster's actors, not those of another test run on the machine)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(title.encode()) and (under is None or _descends(int(entry.name), under)):
            pids.append(int(entry.name))
    return pids


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent pid
        if pid == ancestor:
            return True
    return False


def kill_one_actor_after_first_shard(run: Path, deadline_s: float = 120) -> int | None:
    """Wait until `run` has a committed samples shard, then SIGKILL one ChunkJudge actor; its pid."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if any((run / "samples").glob("part-*.parquet")) and (pids := actor_pids(under=os.getpid())):
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.05)
    return None
