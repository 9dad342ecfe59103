"""What `cotforge generate` costs on top of the raw engine call, same prompts and parameters.

Baseline ("raw"): the embedded engine's own batches straight into `model.generate`
(`EmbeddedEngine.build_batches` + `generate_ids`), nothing else. Measured: `cotforge.generate.generate`
with the same loaded engine, k samples per prompt in one round, the R1 check chain in its worker
pool, atomic shards and manifest. Seeds are derived the same way in both, so both generate the same
tokens; raw runs before and after, and its mean is the baseline. Last line: ratio = cotforge
tokens/s / raw tokens/s (target >= 0.95).

    python benchmarks/generate_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cotforge.engines.base import Request, SamplingParams
from cotforge.generate import GenerateConfig, generate
from cotforge.generate.config import sample_seed
from cotforge.generate.templates import render_request

# torch/transformers are imported inside main(): the check pool's worker processes re-import this
# script as their __main__ (Python's forkserver/spawn semantics), and should not load a model stack.

PROMPTS = Path(__file__).resolve().parents[1] / "recipes" / "data" / "quickstart_prompts.jsonl"


def raw_run(engine, requests: list[Request], params: SamplingParams) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = 0
    for batch in engine.build_batches(requests):
        new_ids = engine.generate_ids(batch, params)
        for row in new_ids.tolist():
            tokens += engine._completion(row, 0, params).completion_tokens
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 prompts, k=2, 32 tokens")
    args = parser.parse_args()
    count, k, max_tokens = (8, 2, 32) if args.quick else (12, 4, 96)
    prompts = [json.loads(line) for line in PROMPTS.read_text().splitlines()][:count]
    config = GenerateConfig(engine="embedded", k=k, max_rounds=1, max_tokens=max_tokens, checks="r1")
    params = SamplingParams(config.temperature, config.top_p, config.max_tokens)
    requests = [Request(p["id"], render_request("chat", p["prompt"], None)[0], n=k,
                        seed=sample_seed(config.seed, p["id"], 0)) for p in prompts]
    from cotforge.engines.embedded import EmbeddedEngine

    load = time.perf_counter()
    engine = EmbeddedEngine()
    print(f"model load {time.perf_counter() - load:.1f}s ({engine.model})")
    raw_run(engine, requests[:1], SamplingParams(max_tokens=4))  # warm-up
    raw_tokens, raw_before = raw_run(engine, requests, params)
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompts.jsonl"
        prompt_file.write_text("".join(json.dumps(p) + "\n" for p in prompts))
        start = time.perf_counter()
        summary = generate(prompt_file, Path(tmp) / "run", config, engine=engine)
        ours = time.perf_counter() - start
    raw_tokens_after, raw_after = raw_run(engine, requests, params)
    raw_seconds = (raw_before + raw_after) / 2
    ours_tokens = summary["completion_tokens"]
    print(f"raw engine: {raw_tokens} tokens in {raw_before:.1f}s and {raw_after:.1f}s "
          f"-> {raw_tokens / raw_seconds:.1f} tokens/s")
    print(f"cotforge generate: {ours_tokens} tokens in {ours:.1f}s -> {ours_tokens / ours:.1f} tokens/s "
          f"({summary['samples']} samples, checks r1)")
    assert raw_tokens == raw_tokens_after == ours_tokens, "same seeds should give the same tokens"
    print(f"cotforge generate / raw engine tokens per second: ratio {(ours_tokens / ours) / (raw_tokens / raw_seconds):.3f}")


if __name__ == "__main__":
    main()
