"""Adaptive rounds vs fixed k on the simulated server: tokens per prompt solved, same prompts solved.

The server is tests/simserver.py (a real HTTP server on 127.0.0.1, 64 slots): per-prompt pass rates
drawn uniformly from [0, 0.9], log-normal completion lengths (median 300 tokens, sigma 0.8, cap
1024; a capped sample fails), each sample drawn from (prompt, seed). Sample i of a prompt has seed
prompt-seed + i under both policies, so both see the very same samples in the same order:
- fixed:    k=8 in one round (every prompt pays for 8 samples);
- adaptive: `cotforge generate` defaults for the rounds: k=2 first, then sized from the prompt's own
            verdicts, budget 8, up to 4 rounds.
Both stop a prompt only at its first accepted sample or its 8th, so both solve the same prompts.
Lower bound: one sample at a time until the first accepted (what no policy can beat on these samples).
Tokens are the server's completion-token counts. Last line: ratio = fixed tokens / adaptive tokens.

    python benchmarks/adaptive_vs_fixed_sim.py [--prompts 240]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from generate_utilization import write_prompts  # the same simulated workload (seed 1 here)
from servers import sim_server

BUDGET = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=240)
    parser.add_argument("--step-ms", type=float, default=0.5, help="decode step (time does not enter the figures)")
    args = parser.parse_args()
    from cotforge.engines import get_engine
    from cotforge.generate import GenerateConfig, generate
    from cotforge.query import run_query

    policies = {"fixed": {"k": BUDGET, "max_rounds": 1},
                "adaptive": {"k": 2, "max_rounds": 4, "budget": BUDGET}}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        write_prompts(prompts, args.prompts, seed=1)
        with sim_server(slots=64, step_ms=args.step_ms, prompts=prompts) as sim:
            for name, options in policies.items():
                engine = get_engine("openai", base_url=sim.base_url)
                config = GenerateConfig(engine="openai", accept=1, max_tokens=1024, checks="answer", **options)
                start = time.perf_counter()
                summary = generate(prompts, Path(tmp) / name, config, engine=engine)
                engine.close()
                _, solved = run_query(Path(tmp) / name, "SELECT prompt_id FROM samples WHERE accepted GROUP BY 1")
                results[name] = {**summary, "solved": {row[0] for row in solved},
                                 "seconds": time.perf_counter() - start}
            _, rows = run_query(Path(tmp) / "fixed", """
                SELECT sum(completion_tokens) FROM samples s WHERE sample_idx <= coalesce(
                  (SELECT min(sample_idx) FROM samples a WHERE a.prompt_id = s.prompt_id AND a.accepted), 99)""")
            bound = rows[0][0]
    for name, r in results.items():
        print(f"{name:9} prompts {r['prompts']}  solved {len(r['solved'])}  samples {r['samples']}  "
              f"completion tokens {r['completion_tokens']}  tokens per prompt solved "
              f"{r['completion_tokens'] / max(len(r['solved']), 1):.0f}  ({r['seconds']:.1f}s)")
    fixed, adaptive = results["fixed"], results["adaptive"]
    assert fixed["solved"] == adaptive["solved"], "both policies must solve the same prompts"
    print(f"lower bound (one sample at a time until the first accepted): {bound} tokens, "
          f"{bound / max(len(fixed['solved']), 1):.0f} per prompt solved; best possible ratio "
          f"{fixed['completion_tokens'] / bound:.2f}")
    ratio = fixed["completion_tokens"] / adaptive["completion_tokens"]
    print(f"tokens fixed k={BUDGET} / adaptive, same {len(fixed['solved'])} prompts solved: ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
