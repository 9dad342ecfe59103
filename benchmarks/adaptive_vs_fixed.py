"""Tokens spent by fixed k=4 sampling vs adaptive rounds, for the same prompts solved.

A replay engine serves, for each GSM8K test question, the 4 labelled model solutions of
../shared/data/gsm8k/example_model_solutions.jsonl (GPT-3 6B/175B, finetuned/verifier) in a fixed
order. Both policies judge them with the same `answer` check against the question's gold:
- fixed:    k=4 in one round (every question pays for 4 samples);
- adaptive: k=1 in round 0, then rounds sized by each question's pass rate, budget 4, up to 4 rounds.
Both can look at the same 4 solutions, so both solve the same questions; what differs is how many
solutions (and tokens) they pay for. Tokens are whitespace words (the replay engine has no
tokenizer). Last line: ratio = fixed tokens / adaptive tokens (target >= 1.43, i.e. 30% fewer).

    python benchmarks/adaptive_vs_fixed.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from cotforge.engines.replay import ReplayEngine
from cotforge.generate import GenerateConfig, generate
from gsm8k_labelled import read_labelled_solutions
from cotforge.query import run_query

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"


def build_inputs(folder: Path, limit: int | None) -> tuple[Path, Path]:
    prompts, recorded = folder / "prompts.jsonl", folder / "recorded.jsonl"
    with open(prompts, "w") as p, open(recorded, "w") as r:
        for question in read_labelled_solutions(SHARED, limit):
            key = f"g{question.index}"
            p.write(json.dumps({"id": key, "prompt": question.question, "gold": question.gold}) + "\n")
            r.writelines(json.dumps({"prompt_id": key, "prompt": question.question, "sample_idx": j,
                                    "completion": solution}) + "\n" for j, (solution, _) in enumerate(question.solutions))
    return prompts, recorded


def run(policy: str, prompts: Path, recorded: Path, out: Path, jobs: int) -> dict:
    if policy == "fixed":
        config = GenerateConfig(engine="replay", k=4, max_rounds=1, checks="answer", jobs=jobs)
    else:
        config = GenerateConfig(engine="replay", k=1, max_rounds=4, budget=4, checks="answer", jobs=jobs)
    start = time.perf_counter()
    summary = generate(prompts, out, config, engine=ReplayEngine(recorded))
    summary["seconds"] = time.perf_counter() - start
    _, rows = run_query(out, "SELECT coalesce(sum(completion_tokens), 0) FROM prompts WHERE accepted > 0")
    summary["solved_tokens"] = rows[0][0]
    if policy == "fixed":  # fewest tokens any policy needs: one sample at a time until the first accepted
        _, rows = run_query(out, """
            SELECT sum(completion_tokens) FROM samples s WHERE sample_idx <= coalesce(
              (SELECT min(sample_idx) FROM samples a WHERE a.prompt_id = s.prompt_id AND a.accepted), 99)""")
        summary["bound_tokens"] = rows[0][0]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="first 300 questions")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit(f"skipped: {SHARED} is absent (the shared GSM8K data)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prompts, recorded = build_inputs(folder, 300 if args.quick else None)
        results = {policy: run(policy, prompts, recorded, folder / policy, args.jobs) for policy in ("fixed", "adaptive")}
    for policy, s in results.items():
        print(f"{policy:9} prompts {s['prompts']}  solved {s['prompts_done']}  samples {s['samples']}  "
              f"tokens {s['completion_tokens']} (on solved prompts {s['solved_tokens']})  ({s['seconds']:.1f}s)")
    fixed, adaptive = results["fixed"], results["adaptive"]
    assert fixed["prompts_done"] == adaptive["prompts_done"], "both policies must solve the same prompts"
    print(f"tokens on solved prompts only, fixed / adaptive: {fixed['solved_tokens'] / adaptive['solved_tokens']:.2f} "
          f"(the never-solved prompts cost 4 samples under both policies)")
    print(f"lower bound (one sample per round until accepted) {fixed['bound_tokens']} tokens: best possible "
          f"ratio on this data {fixed['completion_tokens'] / fixed['bound_tokens']:.2f}")
    ratio = fixed["completion_tokens"] / adaptive["completion_tokens"]
    print(f"tokens fixed k=4 / adaptive for {fixed['prompts_done']} solved prompts: ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
