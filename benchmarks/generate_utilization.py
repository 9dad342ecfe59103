"""Share of a continuous-batching server's capacity that `cotforge generate --engine openai` uses.

The server is tests/simserver.py, a real HTTP server on 127.0.0.1 in its own process: 64 sequence
slots, one token per slot per decode step, log-normal completion lengths (median 300 tokens, sigma
0.8: ~6% hit the 1024-token cap and come back truncated, so they fail), per-prompt pass rates drawn
uniformly from [0, 0.9]. Time is counted in decode steps, so a loaded machine does not distort the
figure: utilization = slot-steps that decoded a token / (slots x steps from the command's start to
its exit).

Runs, each on a fresh server, same workload per 64 slots (1000 prompts, `--quick` 240; k=4,
accept=1, max_tokens 1024, checks `answer`):
1. `cotforge generate` with DEFAULT settings against one server (a subprocess: the whole command,
   start-up and final summary included);
2. the same against a fleet of 4 servers (`--base-url` x 4, 4x the prompts);
3. with `--baseline`: the batch-round path this replaced, re-enacted on the same engine: rounds of
   batches of 8 prompts, each batch sent with `Engine.generate` (concurrency 8, the old defaults),
   then judged, then the next batch; the next round after the whole round.
A prompt's rounds run one after another (each is planned from the last one's verdicts), so the end of
a run is the tail of the last prompts' chains (~2000 steps here, at low occupancy): utilization
grows with the number of prompts per slot (240 prompts: ~0.80; 1000: see the figures).
Last line: ratio = utilization at defaults on one server against the 1.0 ideal (a full server from the
command's first instant to its last).

    python benchmarks/generate_utilization.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from servers import sim_server

SLOTS = 64
TIMELINE = "--timeline" in sys.argv
EXTRA: list[str] = []  # --cli-arg: settings other than the defaults, for exploring (not for the figures)
COMMON = ["--engine", "openai", "--k", "4", "--accept", "1", "--max-tokens", "1024", "--checks", "answer"]


def write_prompts(path: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for i in range(count):
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            handle.write(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: what is {a} + {b}?",
                                     "gold": str(a + b), "pass_rate": round(rng.uniform(0, 0.9), 3)}) + "\n")


def utilization(servers: list) -> tuple[float, int]:
    stats = [server.stats() for server in servers]
    if TIMELINE:
        print("utilization per 100 steps:", stats[0]["timeline"])
    busy = sum(s["busy"] for s in stats)
    capacity = sum(s["slots"] * s["steps"] for s in stats)
    return busy / capacity, max(s["steps"] for s in stats)


def run_cli(prompts: Path, out: Path, urls: list[str]) -> tuple[float, str]:
    command = [sys.executable, "-m", "cotforge.cli", "generate", str(prompts), "--out", str(out), *COMMON, *EXTRA]
    for url in urls:
        command += ["--base-url", url]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if result.returncode != 0:
        sys.exit(f"cotforge generate failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, result.stdout.strip().splitlines()[0]


def streaming(folder: Path, servers: int, prompts_per_server: int, step_ms: float) -> dict:
    prompts = folder / f"prompts-{servers}.jsonl"
    write_prompts(prompts, prompts_per_server * servers)
    with _servers(servers, prompts, step_ms) as sims:
        for sim in sims:
            sim.reset()
        seconds, summary = run_cli(prompts, folder / f"run-{servers}", [s.base_url for s in sims])
        util, steps = utilization(sims)
    return {"utilization": util, "steps": steps, "seconds": seconds, "summary": summary}


def batch_rounds(folder: Path, prompts_per_server: int, step_ms: float) -> dict:
    """The old path: batch-synchronous rounds (batch_size 8, concurrency 8), checks between batches."""
    from cotforge.checks.chain import Chain
    from cotforge.engines.base import Request, SamplingParams, get_engine
    from cotforge.generate.allocation import PromptState, next_round
    from cotforge.generate.config import GenerateConfig, sample_seed

    prompts = folder / "prompts-1.jsonl"
    rows = [json.loads(line) for line in prompts.read_text().splitlines()][:prompts_per_server]
    config = GenerateConfig(k=4, accept=1, max_tokens=1024)
    params = SamplingParams(config.temperature, config.top_p, config.max_tokens)
    state = {row["id"]: PromptState() for row in rows}
    by_id = {row["id"]: row for row in rows}
    with _servers(1, prompts, step_ms) as (sim,), Chain.from_spec("answer", jobs=1) as chain:
        engine = get_engine("openai", base_url=sim.base_url, concurrency=8)
        chain.start()
        sim.reset()
        start = time.perf_counter()
        for _ in range(config.max_rounds):
            plan = {pid: n for pid, s in state.items() if (n := next_round(s, config))}
            items = list(plan.items())
            for at in range(0, len(items), 8):
                requests = [Request(pid, [{"role": "user", "content": by_id[pid]["prompt"]}], n=n,
                                    seed=sample_seed(0, pid, state[pid].spent), first_index=state[pid].spent)
                            for pid, n in items[at:at + 8]]
                outputs = engine.generate(requests, params)
                samples = [{"completion": c.text, "gold": by_id[r.key]["gold"], "prompt_id": r.key}
                           for r, out in zip(requests, outputs) for c in out]
                for sample, result in zip(samples, chain.run(samples)):
                    prompt = state[sample["prompt_id"]]
                    prompt.spent += 1
                    prompt.accepted += result.accepted
                for request in requests:
                    state[request.key].rounds += 1
        seconds = time.perf_counter() - start
        engine.close()
        util, steps = utilization([sim])
    return {"utilization": util, "steps": steps, "seconds": seconds,
            "summary": f"{sum(s.accepted >= 1 for s in state.values())} prompts reached accept"}


class _servers:
    """Start `count` simulated servers (each a process) and stop them all afterwards."""

    def __init__(self, count: int, prompts: Path, step_ms: float) -> None:
        self.managers = [sim_server(slots=SLOTS, step_ms=step_ms, prompts=prompts) for _ in range(count)]

    def __enter__(self) -> list:
        return [manager.__enter__() for manager in self.managers]

    def __exit__(self, *exc) -> None:
        for manager in self.managers:
            manager.__exit__(*exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="240 prompts, no fleet run")
    parser.add_argument("--step-ms", type=float, default=2.0, help="decode step (simulated time unit)")
    parser.add_argument("--baseline", action="store_true", help="also run the batch-round path (slow: ~6x)")
    parser.add_argument("--prompts", type=int, help="prompts per server (default 1000, --quick 240)")
    parser.add_argument("--timeline", action="store_true", help="print utilization per 100 steps")
    parser.add_argument("--cli-arg", action="append", default=[], help="extra generate argument (exploring)")
    args = parser.parse_args()
    EXTRA.extend(args.cli_arg)
    per_server = args.prompts or (240 if args.quick else 1000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {"defaults, 1 server": streaming(folder, 1, per_server, args.step_ms)}
        if not args.quick:
            results["defaults, fleet of 4"] = streaming(folder, 4, per_server, args.step_ms)
        if args.baseline:
            results["batch rounds (old path)"] = batch_rounds(folder, per_server, args.step_ms)
    for name, r in results.items():
        print(f"{name:26} utilization {r['utilization']:.3f}  ({r['steps']} decode steps, {r['seconds']:.1f}s)  "
              f"{r['summary']}")
    stream = results["defaults, 1 server"]["utilization"]
    if args.baseline:
        base = results["batch rounds (old path)"]["utilization"]
        print(f"streaming at defaults / batch rounds, same prompts: {stream / base:.2f}")
    print(f"utilization at defaults ({per_server} prompts, {SLOTS} slots) against the 1.0 ideal: ratio {stream:.2f}")


if __name__ == "__main__":
    main()
