"""`filter --executor ray` on a real Ray cluster (two nodes on this machine): the same verdicts as the
local executor id by id, hard limits inside Ray workers, a killed worker and a killed driver."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest
from ray_helpers import (
    TESTS,
    actor_pids,
    judged,
    kill_one_actor_after_first_shard,
    ray_env,
    write_samples,
)
from servers import free_port

from cotforge.filtering import filter_samples
from cotforge.query import run_query

QUICKSTART_AND_PACED = """checks:
  - check: format
    require_reasoning: false
  - check: answer
  - check: language
    min_share: 0.95
  - check: repetition
  - check: test_paced
    pause_s: {pause}
"""
HANG = {"id": "hang", "prompt": "What is 2+2?", "completion": "HANG. The answer is 4.", "gold": "4"}


@pytest.fixture
def gsm8k(shared_dir):
    return shared_dir / "data" / "gsm8k" / "example_model_solutions.jsonl"


def shard_names(run, table):
    return sorted(p.name for p in (run / table).iterdir())


def checks_file(tmp_path, pause: float = 0.0):
    path = tmp_path / f"checks-{pause}.yaml"
    path.write_text(QUICKSTART_AND_PACED.format(pause=pause))
    return str(path)


def test_filter_on_two_node_cluster_equals_local(ray_cluster, gsm8k, tmp_path):
    data = tmp_path / "samples.jsonl"
    rows = write_samples(data, gsm8k, questions=30, extra=[HANG])
    with open(data, "ab") as handle:
        handle.write(b'{"id": "broken", "prompt": \n')
    checks = checks_file(tmp_path)
    options = {"checks": checks, "bad_rows": "quarantine", "chunk_rows": 16}
    local = filter_samples([data], tmp_path / "local", jobs=1, **options)
    on_ray = filter_samples([data], tmp_path / "ray", jobs=2, executor="ray", address=ray_cluster.address, **options)

    verdicts = judged(tmp_path / "ray")
    assert verdicts == judged(tmp_path / "local")
    assert len(verdicts) == rows
    assert 0 < on_ray["accepted"] < rows  # the data exercises both outcomes
    # the hard limit fired inside a Ray worker, the worker went on
    paced = next(v for v in verdicts["hang"][2] if v[0] == "test_paced")  # before the chain's `verified` stage
    assert paced == ("test_paced", False, 0.0, "timeout: over 1s")
    assert verdicts["hang"][2][-1][0] == "verified"  # the verification stage ran in the Ray actors too
    assert on_ray["rows_read"] == local["rows_read"] == rows + 1 and on_ray["quarantined"] == 1
    assert on_ray["funnel"] == local["funnel"]
    for table in ("samples", "quarantine"):  # the local executor's layout: query and resume work unchanged
        assert shard_names(tmp_path / "ray", table) == shard_names(tmp_path / "local", table)
    assert shard_names(tmp_path / "ray", "samples") == [f"part-{i:06d}.parquet" for i in range(-(-(rows + 1) // 16))]
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["config_hash"] == json.loads((tmp_path / "local" / "manifest.json").read_text())["config_hash"]
    _, reasons = run_query(tmp_path / "ray", "SELECT reason FROM verdicts WHERE id = 'hang' AND \"check\" = "
                                             "'test_paced'")
    assert reasons == [("timeout: over 1s",)]


def test_worker_killed_mid_run_is_replaced_and_nothing_lost(ray_cluster, gsm8k, tmp_path):
    data = tmp_path / "samples.jsonl"
    rows = write_samples(data, gsm8k, questions=20)
    options = {"checks": checks_file(tmp_path, pause=0.04), "chunk_rows": 8}
    killed = {}
    killer = threading.Thread(target=lambda: killed.update(pid=kill_one_actor_after_first_shard(tmp_path / "ray")))
    killer.start()
    counts = filter_samples([data], tmp_path / "ray", jobs=2, executor="ray", address=ray_cluster.address, **options)
    killer.join()
    assert killed["pid"] is not None, "no Ray worker was found to kill"
    assert counts["rows_read"] == rows
    filter_samples([data], tmp_path / "local", jobs=1, **options)
    assert judged(tmp_path / "ray") == judged(tmp_path / "local")


DRIVER = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import ray_helpers; from cotforge.cli import main; main()"


def test_driver_killed_then_rerun_resumes_without_redoing_committed_chunks(ray_cluster, gsm8k, tmp_path):
    data = tmp_path / "samples.jsonl"
    rows = write_samples(data, gsm8k, questions=20)
    checks = checks_file(tmp_path, pause=0.04)
    run = tmp_path / "ray"
    command = [sys.executable, "-c", DRIVER, "filter", str(data), "--out", str(run), "--checks", checks,
               "--chunk-rows", "8", "--executor", "ray", "--address", ray_cluster.address, "--jobs", "2"]
    driver = subprocess.Popen(command, env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list((run / "samples").glob("part-*.parquet"))) < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.05)
    driver.kill()
    driver.communicate()
    committed = {p.name: p.read_bytes() for p in (run / "samples").glob("part-*.parquet")}
    assert 2 <= len(committed) < -(-rows // 8), "the driver must die mid-run"
    deadline = time.monotonic() + 30
    while actor_pids() and time.monotonic() < deadline:  # Ray ends a dead driver's workers
        time.sleep(0.2)
    assert not actor_pids()

    rerun = subprocess.run(command, check=False, env=ray_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"rows read {rows}:" in rerun.stdout
    for name, content in committed.items():  # committed chunks were skipped, not judged again
        assert (run / "samples" / name).read_bytes() == content
    filter_samples([data], tmp_path / "local", jobs=1, checks=checks, chunk_rows=8)
    assert judged(run) == judged(tmp_path / "local")
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in (run / "samples").glob("*.parquet")) == rows


def test_ray_executor_errors_are_one_line(cli, ray_cluster, tmp_path):
    data = tmp_path / "samples.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "x", "completion": "<think>y</think> z"}) + "\n")
    too_many = cli("filter", data, "--out", tmp_path / "run", "--checks", "format", "--executor", "ray",
                   "--address", ray_cluster.address, "--jobs", "9", env=ray_env())
    assert too_many.returncode == 1
    assert too_many.stderr.strip() == "--jobs 9: the Ray cluster has 2 CPUs (one per worker)"
    nobody = cli("filter", data, "--out", tmp_path / "run1", "--checks", "format", "--executor", "ray",
                 "--address", f"127.0.0.1:{free_port()}")
    assert nobody.returncode == 1 and nobody.stderr.startswith("--executor ray: no Ray cluster answers at 127.0.0.1:")
    assert len(nobody.stderr.strip().splitlines()) == 1
    unknown = cli("filter", data, "--out", tmp_path / "run2", "--checks", "format", "--executor", "spark")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "--executor 'spark': choose local or ray"
