"""Our `answer` check against math-verify's `parse` + `verify`, same pairs, same run, same cores.

Pairs: the 5,276 labelled GSM8K model solutions (shared/data/gsm8k/example_model_solutions.jsonl)
and the 254 math-verify regression cases (shared/conformance/math_verify_cases.jsonl).
Ours runs through `cotforge.checks.chain.Chain(jobs=N)` (process pool, hard per-item limits); math-verify
runs in a `multiprocessing.Pool(N)` with its defaults, both sides wrapped in `$...$` when bare and
its signal timeouts on (it runs in pool workers' main threads, as its README intends).
Both use default options. Throughput is measured twice: from pool start (imports, parser warm-up,
all items) and once both pools are warm (each worker imported its library and parsed the same
`symbolic.WARM_UP` answers), which is what a long filtering run sees.

    python benchmarks/verify_vs_math_verify.py [--quick] [--jobs N] [--repeat 2] [--shared ../shared]

The last line printed is `ratio X`: our warm throughput over math-verify's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_pairs(shared: Path, quick: bool) -> list[dict]:
    """[{gold, pred, label, set}] from both labelled sets."""
    from gsm8k_labelled import read_labelled_solutions

    pairs = []
    for question in read_labelled_solutions(shared / "data/gsm8k/example_model_solutions.jsonl"):
        pairs.extend({"gold": question.gold, "pred": solution, "label": is_correct, "set": "gsm8k"}
                     for solution, is_correct in question.solutions)
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


_barrier = None


def _warm(barrier) -> None:
    """Pool initializer: imports and the same warm-up parses our workers do (`symbolic.WARM_UP`)."""
    global _barrier
    from math_verify import parse

    from cotforge.checks.answer.symbolic import WARM_UP

    _barrier = barrier
    for text in WARM_UP:
        parse(f"${text}$")


def _ready(_: int) -> None:
    _barrier.wait()  # each worker holds one of these tasks: all have finished their initializer


def run_math_verify(pairs: list[dict], jobs: int) -> tuple[list[bool], float, float, int]:
    """(verdicts, seconds from pool start, seconds once warm, items over 1 s)."""
    context = mp.get_context("forkserver")
    started = time.perf_counter()
    with context.Pool(jobs, initializer=_warm, initargs=(context.Barrier(jobs),)) as pool:
        pool.map(_ready, range(jobs), chunksize=1)
        warm = time.perf_counter()
        out = pool.map(_math_verify_one, [(p["gold"], p["pred"]) for p in pairs], chunksize=16)
    done = time.perf_counter()
    return [r for r, _ in out], done - started, done - warm, sum(1 for _, t in out if t > 1.0)


def run_ours(pairs: list[dict], jobs: int) -> tuple[list[bool], float, float]:
    """(verdicts, seconds from pool start, seconds once warm). Workers warm up as they build the
    check; one batch per worker through the chain waits for that."""
    from cotforge.checks.chain import BATCH, Chain, CheckSpec

    samples = [{"gold": p["gold"], "completion": p["pred"]} for p in pairs]
    ready = [{"gold": "1", "completion": "1"}] * (BATCH * jobs)
    started = time.perf_counter()
    with Chain([CheckSpec("answer")], jobs=jobs) as chain:
        chain.run(ready)
        warm = time.perf_counter()
        results = chain.run(samples)
        done = time.perf_counter()
    return [r.verdicts[0].passed for r in results], done - started, done - warm


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
    parser.add_argument("--repeat", type=int, default=2, help="runs per side; the best time counts")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("COTFORGE_SHARED", REPO.parent / "shared")))
    args = parser.parse_args()

    pairs = load_pairs(args.shared, args.quick)
    print(f"{len(pairs)} pairs, {args.jobs} worker processes each, best of {args.repeat} (order ours, theirs, "
          f"theirs, ours, ...: neighbours' load drifts)")
    ours_times, theirs_times = [], []
    for round_index in range(args.repeat):
        order = ("ours", "theirs") if round_index % 2 == 0 else ("theirs", "ours")
        for side in order:
            if side == "ours":
                ours, cold, warm = run_ours(pairs, args.jobs)
                ours_times.append((cold, warm))
            else:
                theirs, cold, warm, theirs_slow = run_math_verify(pairs, args.jobs)
                theirs_times.append((cold, warm))
    ours_cold, ours_warm = min(t[0] for t in ours_times), min(t[1] for t in ours_times)
    theirs_cold, theirs_warm = min(t[0] for t in theirs_times), min(t[1] for t in theirs_times)
    ours_slow = slow_items_ours(pairs)
    n = len(pairs)
    for name, verdicts, cold, warm, slow in (("cotforge answer", ours, ours_cold, ours_warm, ours_slow),
                                             ("math-verify", theirs, theirs_cold, theirs_warm, theirs_slow)):
        print(f"{name:16} {n / warm:6.0f} pairs/s warm ({warm:5.2f}s), {n / cold:6.0f} pairs/s from pool start "
              f"({cold:5.2f}s)  items over 1s: {slow}  gsm8k {accuracy(pairs, verdicts, 'gsm8k')}  "
              f"conformance {accuracy(pairs, verdicts, 'conformance')}")
    print(f"from pool start: ratio {theirs_cold / ours_cold:.2f}")
    print(f"ratio {theirs_warm / ours_warm:.2f} (ours/math-verify throughput once both pools are warm, "
          f"{args.jobs} processes each)")


if __name__ == "__main__":
    main()
