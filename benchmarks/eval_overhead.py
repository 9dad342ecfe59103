"""What `cotforge eval` costs on top of `cotforge generate` drawing the same fixed n per prompt.

Baseline: `cotforge.generate.generate` with one fixed round of n per prompt (`k=n, max_rounds=1`,
`adaptive: false`, `accept=n`: nothing stops early) and eval's default chain (`filters/eval.yaml`),
on the same loaded engine and prompts. Measured: `cotforge.evaluation.evaluate` with `--n n`, which
also groups the answers into vote classes and writes the metrics before the run is complete. Both
draw the same samples (same seeds, same batches); each is run twice, alternating, and the best
time of each counts. Last line: ratio = eval tokens/s / generate tokens/s (target >= 0.95).

    python benchmarks/eval_overhead.py [--quick] [--prompts P] [--n N] [--max-tokens T] [--threads 1]

`--threads` sets torch's intra-op threads (default 1): on a shared, oversubscribed CPU two threads
spend their time in each other's barriers (docs/notes/eval.md), which only adds noise to both sides.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

PROMPTS = Path(__file__).resolve().parents[1] / "recipes" / "data" / "quickstart_prompts.jsonl"

# torch/transformers are imported inside main(): the check pool's workers re-import this script.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 prompts, n=4, 48 tokens")
    parser.add_argument("--prompts", type=int, help="number of prompts (overrides the size's)")
    parser.add_argument("--n", type=int, help="samples per prompt (overrides the size's)")
    parser.add_argument("--max-tokens", type=int, help="tokens per sample (overrides the size's)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    from cotforge.engines.embedded import EmbeddedEngine
    from cotforge.evaluation import evaluate
    from cotforge.generate import GenerateConfig, generate

    count, n, max_tokens = (6, 4, 48) if args.quick else (12, 8, 96)
    count, n, max_tokens = args.prompts or count, args.n or n, args.max_tokens or max_tokens
    prompts = [json.loads(line) for line in PROMPTS.read_text().splitlines()][:count]
    engine = EmbeddedEngine(threads=args.threads)
    fixed = {"k": n, "max_rounds": 1, "adaptive": False, "accept": n, "budget": n, "max_tokens": max_tokens,
             "checks": "eval"}
    best = {"generate": (0, float("inf")), "eval": (0, float("inf"))}
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompts.jsonl"
        prompt_file.write_text("".join(json.dumps(p) + "\n" for p in prompts))
        generate(prompt_file, Path(tmp) / "warm", GenerateConfig(k=1, max_rounds=1, max_tokens=4), engine=engine)
        for round_ in range(2):
            start = time.perf_counter()
            summary = generate(prompt_file, Path(tmp) / f"gen{round_}", GenerateConfig(**fixed), engine=engine)
            seconds = time.perf_counter() - start
            if seconds < best["generate"][1]:
                best["generate"] = (summary["completion_tokens"], seconds)
            start = time.perf_counter()
            result = evaluate(prompt_file, Path(tmp) / f"eval{round_}", n, engine=engine, max_tokens=max_tokens)
            seconds = time.perf_counter() - start
            if seconds < best["eval"][1]:
                best["eval"] = (result["completion_tokens"], seconds)
            print(f"round {round_}: generate {summary['samples']} samples, eval {result['samples']} samples, "
                  f"eval pass@1 {result['metrics']['overall']['pass@1']:.3f}", flush=True)
    (gen_tokens, gen_s), (eval_tokens, eval_s) = best["generate"], best["eval"]
    assert gen_tokens == eval_tokens, "same seeds and batches should give the same tokens"
    print(f"generate (fixed n={n}): {gen_tokens} tokens in {gen_s:.1f}s -> {gen_tokens / gen_s:.1f} tokens/s")
    print(f"eval (n={n}, votes + metrics): {eval_tokens} tokens in {eval_s:.1f}s -> {eval_tokens / eval_s:.1f} tokens/s")
    print(f"eval / generate (fixed n={n}, {count} prompts, embedded engine) tokens per second: "
          f"ratio {(eval_tokens / eval_s) / (gen_tokens / gen_s):.3f}")


if __name__ == "__main__":
    main()
