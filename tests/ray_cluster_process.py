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

STARTS = 3


def main() -> None:
    # Ray starts workers at niceness 15; on a machine shared with other test runs a niced vLLM replica
    # gets almost no CPU and a test times out. The nodes are children of this process: they read it.
    os.environ.setdefault("RAY_worker_niceness", "0")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # shut the nodes down on SIGTERM too
    from ray.cluster_utils import Cluster

    cpus = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for attempt in range(STARTS):
        try:
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
            cluster.add_node(num_cpus=cpus)
            cluster.wait_for_nodes()
            break
        except Exception:  # noqa: BLE001 - Ray gives a node 30 s to register, hard-coded; a loaded machine can miss it
            _kill_children()
            if attempt == STARTS - 1:
                raise
    try:
        print(json.dumps({"address": cluster.address}), flush=True)
        sys.stdin.read()  # returns at EOF: the parent is done with the cluster (or gone)
    finally:
        cluster.shutdown()


def _kill_children() -> None:
    """The node processes a failed start left (this process started them)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if parent == os.getpid():
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass


if __name__ == "__main__":
    main()
