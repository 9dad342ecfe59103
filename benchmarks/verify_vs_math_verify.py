"""Our `answer` check against math-verify's `parse` + `verify`, same pairs, same run, same cores.

Pairs: the 5,276 labelled GSM8K model solutions (shared/data/gsm8k/example_model_solutions.jsonl)
and the 254 math-verify regression cases (shared/conformance/math_verify_cases.jsonl).
Ours runs through `cotforge.chain.Chain(jobs=N)` (process pool, hard per-item limits); math-verify
runs in a `multiprocessing.Pool(N)` with its defaults, both sides wrapped in `$...$` when bare and
its signal timeouts on (it runs in pool workers' main threads, as its README intends).
Both use default options. Throughput counts the whole judging call, pool start included.

    python benchmarks/verify_vs_math_verify.py [--quick] [--jobs N] [--shared ../shared]

The last line printed is `ratio X`: our throughput over math-verify's.
"""

from __future__ import annotations

import argparse
import ast
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def load_pairs(shared: Path, quick: bool) -> list[dict]:
    """[{gold, pred, label, set}] from both labelled sets."""
    pairs = []
    with open(shared / "data/gsm8k/example_model_solutions.jsonl") as handle:
        for line in handle:
            row = json.loads(line)
            for model in MODELS:
                cell = row[model]
                cell = ast.literal_eval(cell) if isinstance(cell, str) else cell  # trusted dataset text
                pairs.append({"gold": row["ground_truth"], "pred": cell["solution"],
                              "label": bool(cell["is_correct"]), "set": "gsm8k"})
    with open(shared / "conformance/math_verify_cases.jsonl") as handle:
        for line in handle:
            row = json.loads(line)
            pairs.append({"gold": row["gold"], "pred": row["pred"], "label": bool(row["expected"]),
                          "set": "conformance"})
    return pairs[::2] if quick else pairs  # quick: every other pair, same mix of both sets


def _wrap(text: str) -> str:
    return text if any(mark in text for mark in ("$", "\\(", "\\[", "\\boxed")) else f"${text}$"


def _math_verify_one(pair: tuple[str, str]) -> tuple[bool, float]:
    from math_verify import parse, verify

    started = time.perf_counter()
    try:
        result = bool(verify(parse(_wrap(pair[0])), parse(_wrap(pair[1]))))
    except Exception:  # noqa: BLE001 - count a crash as a wrong answer, like a timeout
        result = False
    return result, time.perf_counter() - started


def _warm() -> None:
    import math_verify  # noqa: F401 - import cost paid at pool start, as our workers pay theirs


def run_math_verify(pairs: list[dict], jobs: int) -> tuple[list[bool], float, int]:
    started = time.perf_counter()
    with mp.get_context("forkserver").Pool(jobs, initializer=_warm) as pool:
        out = pool.map(_math_verify_one, [(p["gold"], p["pred"]) for p in pairs], chunksize=16)
    elapsed = time.perf_counter() - started
    return [r for r, _ in out], elapsed, sum(1 for _, t in out if t > 1.0)


def run_ours(pairs: list[dict], jobs: int) -> tuple[list[bool], float, list[str]]:
    from cotforge.chain import Chain, CheckSpec

    samples = [{"gold": p["gold"], "completion": p["pred"]} for p in pairs]
    started = time.perf_counter()
    with Chain([CheckSpec("answer")], jobs=jobs) as chain:
        results = chain.run(samples)
    elapsed = time.perf_counter() - started
    return [r.verdicts[0].passed for r in results], elapsed, [r.verdicts[0].reason for r in results]


def slow_items_ours(pairs: list[dict]) -> int:
    """Per-item latency, measured in this process (not part of the throughput figure)."""
    from cotforge.checks import create

    check, slow = create("answer"), 0
    check.check({"gold": "$x$", "completion": "$\\frac{x}{1}$"})  # import sympy before timing
    for pair in pairs:
        started = time.perf_counter()
        check.check({"gold": pair["gold"], "completion": pair["pred"]})
        slow += time.perf_counter() - started > 1.0
    return slow


def accuracy(pairs: list[dict], verdicts: list[bool], which: str) -> str:
    chosen = [(p["label"], v) for p, v in zip(pairs, verdicts) if p["set"] == which]
    right = sum(label == verdict for label, verdict in chosen)
    return f"{right}/{len(chosen)} = {100 * right / max(len(chosen), 1):.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every other pair (2,638 GSM8K + 127 conformance)")
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4))
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("COTFORGE_SHARED", REPO.parent / "shared")))
    args = parser.parse_args()

    pairs = load_pairs(args.shared, args.quick)
    print(f"{len(pairs)} pairs, {args.jobs} worker processes each")
    ours, ours_s, _ = run_ours(pairs, args.jobs)
    theirs, theirs_s, theirs_slow = run_math_verify(pairs, args.jobs)
    ours_slow = slow_items_ours(pairs)
    ours_rate, theirs_rate = len(pairs) / ours_s, len(pairs) / theirs_s
    for name, verdicts, seconds, rate, slow in (("cotforge answer", ours, ours_s, ours_rate, ours_slow),
                                                ("math-verify", theirs, theirs_s, theirs_rate, theirs_slow)):
        print(f"{name:16} {seconds:6.2f}s  {rate:8.0f} pairs/s  items over 1s: {slow:3d}  "
              f"gsm8k {accuracy(pairs, verdicts, 'gsm8k')}  conformance {accuracy(pairs, verdicts, 'conformance')}")
    print(f"ratio {ours_rate / theirs_rate:.2f} (ours/math-verify throughput, {args.jobs} processes each)")


if __name__ == "__main__":
    main()
