"""cotforge on a Ray cluster: filter throughput with 1 and 2 Ray workers, generate utilization over Ray.

1. `filter --executor ray` over GSM8K's labelled model solutions (../shared: 1,319 questions x 4
   solutions, twice under distinct ids: 10,552 rows; checks: the quickstart preset) on a local Ray,
   with `--jobs 1` then `--jobs 2` Ray workers: rows/s over the whole call, worker start-up included.
   On this project's 2-core machine, shared with other jobs, two workers can at best use both cores.
2. `cotforge generate --executor ray` (the whole command, a subprocess) against 4 simulated
   continuous-batching servers (the simulator of `benchmarks/generate_utilization.py`, imported from
   there: 64 slots each, time in decode steps) with one engine replica per server, on a Ray cluster
   started beforehand as a real cluster would be; utilization = slot-steps that decoded / (slots x
   steps from the command's start to its exit), target >= 0.85. Baseline, in the same run on fresh
   servers: the same command with the local executor (the openai engine's own fleet dispatch).
Last line: utilization on Ray / utilization with the local executor.

    python benchmarks/ray_scaling.py [--quick]      # needs cotforge[ray,checks,openai] and ../shared
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))
SHARED = Path(os.environ.get("COTFORGE_SHARED", REPO.parent / "shared"))

import generate_utilization as simulated
from servers import sim_server


def filter_throughput(folder: Path, questions: int | None, copies: int, address: str) -> dict[int, float]:
    """rows/s of `filter --executor ray` with 1 and 2 workers, over the whole call (worker start-up in)."""
    from ray_helpers import write_samples

    from cotforge.filtering import filter_samples

    data = folder / "samples.jsonl"
    rows = write_samples(data, SHARED / "data" / "gsm8k" / "example_model_solutions.jsonl", questions,
                         copies=copies)
    rates = {}
    for workers in (1, 2):
        start = time.perf_counter()
        counts = filter_samples([data], folder / f"filter-{workers}", checks="quickstart", jobs=workers,
                                chunk_rows=250, executor="ray", address=address)
        seconds = time.perf_counter() - start
        assert counts["rows_read"] == rows
        rates[workers] = rows / seconds
        print(f"filter on Ray, {workers} worker(s): {rows} rows in {seconds:.1f}s = {rates[workers]:.0f} rows/s "
              f"(accepted {counts['accepted']})", flush=True)
    return rates


def generate_run(folder: Path, name: str, prompts_per_server: int, step_ms: float, extra: list[str]) -> dict:
    prompts = folder / f"prompts-{name}.jsonl"
    simulated.write_prompts(prompts, prompts_per_server * 4)
    simulated.EXTRA[:] = extra
    managers = [sim_server(slots=simulated.SLOTS, step_ms=step_ms, prompts=prompts) for _ in range(4)]
    sims = [manager.__enter__() for manager in managers]
    try:
        for sim in sims:
            sim.reset()
        seconds, summary = simulated.run_cli(prompts, folder / f"run-{name}", [s.base_url for s in sims])
        util, steps = simulated.utilization(sims)
    finally:
        for manager in managers:
            manager.__exit__(None, None, None)
    print(f"generate, 4 servers, {name:14} utilization {util:.3f} ({steps} decode steps, {seconds:.1f}s)  {summary}",
          flush=True)
    return {"utilization": util, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and prompts")
    parser.add_argument("--step-ms", type=float, default=4.0, help="decode step (simulated time unit)")
    parser.add_argument("--generate-only", action="store_true", help="skip the filter part")
    parser.add_argument("--prompts-per-server", type=int, default=None,
                        help="prompts per simulated server (default 1000, as generate_utilization.py's fleet; --quick 120); "
                             "utilization grows with it, "
                             "since a run's tail is its last prompts' chains of rounds")
    args = parser.parse_args()
    import ray

    # The Ray workers import cotforge (and the tests' helpers) from this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"),
                                                             os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.ERROR)  # 4 logical CPUs: 4 replicas
    address = ray.get_runtime_context().gcs_address
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            rates = {} if args.generate_only else filter_throughput(folder, 100 if args.quick else None,
                                                                    1 if args.quick else 2, address)
            per_server = args.prompts_per_server or (120 if args.quick else 1000)
            on_ray = generate_run(folder, "executor ray", per_server, args.step_ms,
                                  ["--executor", "ray", "--address", address])
            local = generate_run(folder, "executor local", per_server, args.step_ms, [])
    finally:
        ray.shutdown()
    if rates:
        print(f"filter on Ray, 2 workers / 1 worker: ratio {rates[2] / rates[1]:.2f}")
    print(f"generate utilization, 4 servers, Ray {on_ray['utilization']:.3f} / local executor "
          f"{local['utilization']:.3f}: ratio {on_ray['utilization'] / local['utilization']:.2f}")


if __name__ == "__main__":
    main()
