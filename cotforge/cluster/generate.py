"""`generate --executor ray`: the streaming scheduler on this machine, engine replicas on the cluster.

How the replicas are laid out (`replica_plan`):
- vllm: one replica per `tensor_parallel_size x pipeline_parallel_size` GPUs (default: as many as the
  cluster's GPUs allow), each a vLLM engine built from the same engine options, its parallel workers
  started by vLLM's multiprocessing backend on the GPUs Ray gave the replica (so a replica lives on
  one node; a model too large for one node is served by vLLM's own multi-node server and reached
  with the openai engine);
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


def replica_plan(config: GenerateConfig, replicas: int | None, cluster: dict) -> tuple[list[dict], dict]:
    """(engine options per replica, Ray resources per replica) for `config` on a cluster of `cluster`."""
    options = config.engine_build_options()
    if config.engine == "vllm":
        gpus = int(options.get("tensor_parallel_size", 1)) * int(options.get("pipeline_parallel_size", 1))
        count = replicas or int(cluster.get("GPU", 0)) // gpus
        if count < 1 or count * gpus > cluster.get("GPU", 0):
            raise CotforgeError(f"--executor ray: {max(count, 1)} vLLM replica(s) of {gpus} GPU(s) need "
                                f"{max(count, 1) * gpus} GPUs; the Ray cluster has {int(cluster.get('GPU', 0))}")
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
        plan, resources = replica_plan(config, replicas, session.ray.cluster_resources())
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
