"""A two-node Ray cluster (`ray.cluster_utils.Cluster`) in a process of its own, for tests whose Ray
must be another venv's (the vLLM venv's: its Ray workers have to import vLLM, which the test venv lacks).

Run with that venv's python: `python tests/ray_cluster_process.py CPUS_PER_NODE`. Prints one JSON line
(`{"address": ...}`) once both nodes are up, then holds the cluster until its stdin closes (the test
process ends or closes the pipe), and shuts it down. Nothing here is left running after that.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def main() -> None:
    # Ray starts workers at niceness 15; on a machine shared with other test runs a niced vLLM replica
    # gets almost no CPU and a test times out. The nodes are children of this process: they read it.
    os.environ.setdefault("RAY_worker_niceness", "0")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # shut the nodes down on SIGTERM too
    from ray.cluster_utils import Cluster

    cpus = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        print(json.dumps({"address": cluster.address}), flush=True)
        sys.stdin.read()  # returns at EOF: the parent is done with the cluster (or gone)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
