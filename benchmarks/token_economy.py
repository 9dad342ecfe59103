"""Tokens per solved prompt: `cotforge generate` (openai engine) against a sequential oracle, with loops.

The server is tests/simserver.py (a real HTTP server on 127.0.0.1, its own process): 64 slots, one
token per slot per decode step, log-normal lengths (median 300, sigma 0.8), and `--loop-share` of the
samples looping: from an onset within the first half of their own length they repeat one 14-token
sentence up to `max_tokens`. The server honours vLLM's `repetition_detection` body field, aborts a
request whose client disconnects, and counts every token it decodes (cancelled ones included): those
counts are the figures. Workload (issue 18): 400 "what is A + B?" prompts, pass rates uniform in
[0, 0.9], accept 1, max_tokens 4096, the default budget of 16 samples per prompt, checks format + answer.

Runs, each on a fresh server:
- oracle (computed, not run): per prompt, samples in seed order (cotforge's seeds), each loop stopped
  where it begins, until the first correct one (or the budget);
- cotforge with default settings;
- cotforge with this issue's features off: no repetition_detection, no cancelling, the fixed 0.5 prior,
  no tail fill (the policy before issue 18);
- fixed n without any stop (open-r1's `generate_reasoning`: n samples per prompt, nothing stopped):
  `--fixed --k 4 --max-rounds 1`, no cancelling, no repetition_detection.
Utilization = slot-steps that decoded a token / (slots x steps from the run's start to its end); also
given between the first request and the last answer (the client's start-up and final summary take
seconds on a loaded machine, and each second is 500 steps at 2 ms).

Imports are paid before the window, as cotforge's own modules are (they are imported above). pyarrow
imports pandas on its first `pa.array` (its pandas shim, whatever the input), which in a run is the
prompts shard's first table: 0.56 s, ~280 steps, so it is imported above too. With it inside the
window the whole-run utilization read 0.874 (first request at step 471 of 12,592); the whole
command, process start included, is what benchmarks/generate_utilization.py measures.

    python benchmarks/token_economy.py [--prompts 400] [--loop-share 0.25] [--step-ms 2]

Last line: ratio = tokens per solved prompt of cotforge at defaults / the oracle's (target <= 1.5).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import pandas  # noqa: E402,F401  (see "Imports" in the docstring)
from servers import sim_server  # noqa: E402
from simserver import Simulator  # noqa: E402

from cotforge.engines.base import get_engine  # noqa: E402
from cotforge.generate.allocation import Adaptive, Fixed  # noqa: E402
from cotforge.generate.config import GenerateConfig, sample_seed  # noqa: E402
from cotforge.generate.scheduler import Scheduler  # noqa: E402

SLOTS, MEDIAN, SIGMA = 64, 300, 0.8
TIMELINE = "--timeline" in sys.argv


class BeforeIssue18(Adaptive):
    """The policy before this issue: the fixed 0.5 prior, first round k, no cancelling, no tail fill."""

    cancels = False
    fills_tail = False

    def round_size(self, prompt, prior=None):
        return super().round_size(prompt, None)


class NoStop(Fixed):
    cancels = False


def write_prompts(path: Path, count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        rows.append({"id": f"q{i}", "prompt": f"Question {i}: what is {a} + {b}?", "gold": str(a + b),
                     "pass_rate": round(rng.uniform(0, 0.9), 3)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def oracle(rows: list[dict], config: GenerateConfig, loop_share: float) -> dict:
    sim = Simulator(SLOTS, 0.0, {r["prompt"]: r for r in rows}, MEDIAN, SIGMA, loop_share=loop_share)
    tokens = solved = 0
    for row in rows:
        for index in range(config.sample_budget):
            draw = sim.draw(row["prompt"], sample_seed(config.seed, row["id"], index), config.max_tokens)
            tokens += draw.onset if draw.onset is not None else draw.length
            if draw.correct:
                solved += 1
                break
    return {"tokens": tokens, "solved": solved}


def run(name: str, prompts: Path, folder: Path, config: GenerateConfig, policy, loop_share: float,
        step_ms: float) -> dict:
    with sim_server(slots=SLOTS, step_ms=step_ms, prompts=prompts, median_tokens=MEDIAN, sigma=SIGMA,
                    extra=("--loop-share", str(loop_share))) as sim:
        engine = get_engine("openai", base_url=sim.base_url)
        sim.reset()
        scheduler = Scheduler(prompts, folder / name, config, engine=engine, policy=policy)
        try:
            summary = scheduler.run_all()
        finally:
            scheduler.close()
            engine.close()
        stats = sim.stats()
    if TIMELINE:
        line = stats["timeline"]
        print(f"{name} busy share per 1000 steps:", [round(sum(line[i:i + 10]) / len(line[i:i + 10]), 2)
                                                     for i in range(0, len(line), 10)])
    solved = summary["prompts_done"]
    return {"name": name, "tokens": stats["tokens"], "solved": solved, "aborted": stats["aborted"],
            "utilization": stats["busy"] / (stats["slots"] * stats["steps"]),
            # between the first request and the last answer: without the client's start-up and summary
            "busy_window": stats["busy"] / (stats["slots"] * max(1, stats["last_step"] - stats["first_step"])),
            "per_solved": stats["tokens"] / max(solved, 1), "accounting": summary["tokens"],
            "first_step": stats["first_step"], "steps": stats["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--loop-share", type=float, default=0.25)
    parser.add_argument("--step-ms", type=float, default=2.0)
    parser.add_argument("--only", choices=["defaults", "off", "fixed"], action="append")
    parser.add_argument("--timeline", action="store_true", help="print the server's busy share over the run")
    args = parser.parse_args()
    base = {"engine": "openai", "accept": 1, "max_tokens": 4096, "checks": "format,answer"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prompts = folder / "prompts.jsonl"
        rows = write_prompts(prompts, args.prompts)
        defaults = GenerateConfig(**base)
        best = oracle(rows, defaults, args.loop_share)
        best["per_solved"] = best["tokens"] / max(best["solved"], 1)
        print(f"oracle (sequential, loops stopped at their onset): {best['tokens']} tokens, "
              f"{best['solved']}/{len(rows)} solved, {best['per_solved']:.0f} tokens per solved prompt")
        off = GenerateConfig(**base, repetition_detection="off")
        fixed = GenerateConfig(**{**base, "k": 4, "max_rounds": 1, "adaptive": False}, repetition_detection="off")
        plans = {"defaults": (defaults, None), "off": (off, BeforeIssue18(off)), "fixed": (fixed, NoStop(fixed))}
        results = {}
        for name in args.only or ["off", "fixed", "defaults"]:
            config, policy = plans[name]
            results[name] = result = run(name, prompts, folder, config, policy, args.loop_share, args.step_ms)
            print(f"{name:>9}: {result['tokens']} tokens, {result['solved']}/{len(rows)} solved, "
                  f"{result['per_solved']:.0f} tokens per solved prompt ({result['per_solved'] / best['per_solved']:.2f}x "
                  f"the oracle), utilization {result['utilization']:.3f} (first request to last answer "
                  f"{result['busy_window']:.3f}), {result['aborted']} sequences aborted, first request at step "
                  f"{result['first_step']} of {result['steps']}",
                  flush=True)
            acc = result["accounting"]
            print(f"           client accounting: accepted {acc['accepted']}, rejected {acc['rejected']}, "
                  f"stopped early {acc['stopped_early']}, cancelled {acc['cancelled']}, per accepted "
                  f"{acc['per_accepted']}", flush=True)
    if "defaults" in results:
        ours = results["defaults"]
        print(f"solved {ours['solved']} vs oracle {best['solved']} ({ours['solved'] / max(best['solved'], 1):.3f}); "
              f"utilization {ours['utilization']:.3f}")
        print(f"token_economy: tokens per solved prompt, cotforge defaults vs sequential oracle: "
              f"ratio {ours['per_solved'] / best['per_solved']:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
