"""`generate --executor ray`: the streaming scheduler with its openai engine replicated on a real Ray
cluster (two nodes on this machine) against simulated continuous-batching servers (tests/simserver.py):
the same samples as the local command, a replica killed mid-run, a driver killed mid-run then resumed."""

from __future__ import annotations

import json
import random
import threading

import pytest
from ray_helpers import actor_pids, judged
from runcheck import assert_same_up_to_cancellation
from servers import sim_server

from cotforge.cluster.generate import generate_on_ray
from cotforge.generate import GenerateConfig, generate

PROMPTS = 24


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rng = random.Random(7)
    with open(path, "w") as handle:
        for i in range(PROMPTS):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            handle.write(json.dumps({"id": f"q{i}", "prompt": f"What is {a} + {b}?", "gold": str(a + b),
                                     "pass_rate": round(rng.uniform(0, 0.9), 2)}) + "\n")
    return path


@pytest.fixture(scope="module")
def sims(prompts):
    """Two simulated servers (8 slots, short completions: the test is about scheduling, not length)."""
    with sim_server(slots=8, step_ms=3, prompts=prompts, median_tokens=40, sigma=0.6) as one,\
            sim_server(slots=8, step_ms=3, prompts=prompts, median_tokens=40, sigma=0.6) as two:
        yield [one, two]


@pytest.fixture(scope="module")
def servers(sims):
    return [sim.base_url for sim in sims]


def config(servers, **extra):
    return GenerateConfig(engine="openai", engine_options={"base_url": servers}, k=2, accept=1, max_rounds=3,
                          max_tokens=120, checks="format,answer", jobs=1, shard_size=8, shard_age_s=1.0, **extra)


def samples(run):
    """id -> (seed, completion, verdicts) of every committed sample (duplicates fail in `judged`)."""
    import pyarrow.parquet as pq

    rows = {}
    for shard in sorted((run / "samples").glob("part-*.parquet")):
        for row in pq.read_table(shard, columns=["id", "seed", "completion"]).to_pylist():
            rows[row["id"]] = (row["seed"], row["completion"])
    verdicts = judged(run)
    return {key: (*value, verdicts[key]) for key, value in rows.items()}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, prompts, servers):
    out = tmp_path_factory.mktemp("local") / "run"
    generate(prompts, out, config(servers))
    return out


def test_generate_over_ray_equals_local(ray_cluster, prompts, servers, local_run, tmp_path):
    summary = generate_on_ray(prompts, tmp_path / "run", config(servers), address=ray_cluster.address)
    assert summary["ray"]["replicas"] == 2  # one replica per server, one per node
    samples(tmp_path / "run")  # no sample committed twice
    # Issue 18's guarantee (tests/runcheck.py): the same samples up to cancelled siblings of prompts
    # that reached accept; the same prompts reach it.
    assert_same_up_to_cancellation(tmp_path / "run", local_run)
    assert summary["samples"] > 2 * PROMPTS  # follow-up rounds were planned
    assert 0 < summary["prompts_done"] < PROMPTS


def test_replica_killed_mid_run_is_replaced_nothing_lost(ray_cluster, prompts, sims, servers, local_run, tmp_path):
    """The kill lands while the replica holds requests, by construction: both servers take requests in
    but decode nothing until the kill is done, so the killed replica always has work to lose (a kill
    timed on the run's progress could hit a replica that had just gone idle, and nothing was resent)."""
    killed = {}
    for sim in sims:
        sim.hold()

    def kill_one_replica():
        import os
        import signal
        import time

        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                pids = actor_pids("ray::EngineReplica", under=os.getpid())  # this session's cluster only
                if len(pids) == 2 and all(sim.stats()["held"] > 0 for sim in sims):
                    os.kill(pids[0], signal.SIGKILL)
                    killed["pid"] = pids[0]
                    return
                time.sleep(0.02)
        finally:
            for sim in sims:
                sim.hold(False)

    killer = threading.Thread(target=kill_one_replica)
    killer.start()
    summary = generate_on_ray(prompts, tmp_path / "run", config(servers), address=ray_cluster.address)
    killer.join()
    assert killed, "no engine replica was found to kill"
    assert summary["ray"]["replica_restarts"] >= 1, summary["ray"]
    assert summary["ray"]["requests_resent"] >= 1, summary["ray"]  # it held requests when it died
    samples(tmp_path / "run")  # no sample committed twice
    assert_same_up_to_cancellation(tmp_path / "run", local_run)


def test_driver_killed_then_same_command_resumes(ray_cluster, prompts, servers, local_run, tmp_path):
    import signal
    import time

    from conftest import cotforge, cotforge_process
    from ray_helpers import ray_env

    run = tmp_path / "run"
    command = ["generate", prompts, "--out", run, "--engine", "openai", "--base-url", servers[0], "--base-url",
               servers[1], "--k", "2", "--accept", "1", "--max-rounds", "3", "--max-tokens", "120", "--checks",
               "format,answer", "--jobs", "1", "--shard-size", "8", "--shard-age", "1", "--executor", "ray",
               "--address", ray_cluster.address]
    driver = cotforge_process(*command, env=ray_env())
    deadline = time.monotonic() + 120
    while not any((run / "samples").glob("part-*.parquet")) and time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    committed = {p.name: p.read_bytes() for p in (run / "samples").glob("part-*.parquet")}
    assert committed and len(samples(run)) < len(samples(local_run)), "the driver must die mid-run"

    rerun = cotforge(*command, env=ray_env(), timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "ray: 2 engine replicas" in rerun.stdout
    for name, content in committed.items():  # committed samples never change
        assert (run / "samples" / name).read_bytes() == content
    samples(run)  # nothing generated twice
    assert_same_up_to_cancellation(run, local_run)  # nothing lost


def test_spent_siblings_are_cancelled_on_the_replicas_and_accounted(ray_cluster, prompts, tmp_path):
    """Issue 18 on Ray: once a prompt has its accepted sample, its siblings still decoding are stopped
    where they run (the replica's engine closes them: the servers count aborts), come back `cancelled`,
    and are accounted as locally (RUN/cancelled, never judged, never exported). Long completions (~1 s
    each, 8 slots a server) and inline checks: a verdict comes long before its siblings end."""
    import pyarrow.parquet as pq

    with sim_server(slots=8, step_ms=3, prompts=prompts, median_tokens=300, sigma=1.0) as one,\
            sim_server(slots=8, step_ms=3, prompts=prompts, median_tokens=300, sigma=1.0) as two:
        wide = GenerateConfig(engine="openai", engine_options={"base_url": [one.base_url, two.base_url]}, k=4,
                              accept=1, max_rounds=1, max_tokens=900, checks="format,answer", jobs=0,
                              shard_size=8, shard_age_s=1.0)
        summary = generate_on_ray(prompts, tmp_path / "run", wide, address=ray_cluster.address)
        aborted = one.stats()["aborted"] + two.stats()["aborted"]
    tokens = summary["tokens"]
    cancelled = pq.read_table(tmp_path / "run" / "cancelled").to_pylist()
    samples = pq.read_table(tmp_path / "run" / "samples").to_pylist()
    assert aborted >= 1  # stopped on the servers, not run to their end and dropped
    assert summary["cancelled"] == len(cancelled) == tokens["cancelled"]["samples"] >= 1
    assert not {(s["prompt_id"], s["sample_idx"]) for s in samples} & {(c["prompt_id"], c["sample_idx"])
                                                                         for c in cancelled}
    assert summary["samples"] == len(samples) == summary["accepted"] + summary["rejected"]
    assert len(samples) + len(cancelled) <= 4 * PROMPTS
    assert tokens["total"] == sum(s["completion_tokens"] for s in samples) + tokens["cancelled"]["tokens"]


def test_replica_plan_for_the_r1_recipe_and_a_server_fleet():
    from cotforge.cluster.generate import replica_plan
    from cotforge.errors import CotforgeError

    r1 = GenerateConfig(engine="vllm", model="/models/r1-zero", engine_options={"tensor_parallel_size": 8})
    plan, resources = replica_plan(r1, None, {"GPU": 64.0, "CPU": 512.0})
    assert len(plan) == 8 and resources == {"num_gpus": 8, "num_cpus": 1}  # one replica per 8-GPU node
    assert all(options["model"] == "/models/r1-zero" for options in plan)
    assert all(options["distributed_executor_backend"] == "mp" for options in plan)  # TP inside the actor
    with pytest.raises(CotforgeError, match="need 8 GPUs; the Ray cluster has 4"):
        replica_plan(r1, None, {"GPU": 4.0})
    fleet = GenerateConfig(engine="openai", engine_options={"base_url": ["http://a", "http://b", "http://c"]},
                           concurrency=300)
    plan, _ = replica_plan(fleet, 2, {"CPU": 4.0})
    assert [p["base_url"] for p in plan] == [["http://a", "http://c"], "http://b"]  # every server, once
    assert [p["concurrency"] for p in plan] == [150, 150]


def test_replicas_without_ray_is_one_line(cli, prompts, tmp_path):
    result = cli("generate", prompts, "--out", tmp_path / "run", "--engine", "replay", "--replicas", "2")
    assert result.returncode == 1 and result.stderr.strip() == "--replicas needs --executor ray"
