"""Answer grading on a hold-out set nobody tuned on: cotforge's `answer` check vs math-verify alone.

The hold-out set (tests/data/answers/holdout.jsonl) was written before the answer check was
changed for issue 21 and is never used to tune it (the cases the fixes were built on live in the
tests). Each row has a class (multi: more than one value offered; calc: restated calculation;
boxes: self-correction between boxes; whole: expressions, equations, intervals, matrices;
language: other languages' answer phrases; text: a gold that is not math), a gold, a completion
and the verdict a careful grader gives: passed, failed, or n/a (a text gold the rules cannot
settle: the judge decides).

Baseline, same process, same rows: math-verify's `parse` + `verify` with its defaults on the
completion's text after `</think>`, both sides wrapped in `$...$` when bare (as
verify_vs_math_verify.py does). math-verify cannot abstain, so it is wrong on every `n/a` row
(it says pass or fail); the per-class table shows where each difference comes from.

    python benchmarks/answer_holdout.py [--cases tests/data/answers/holdout.jsonl] [--show-wrong]

The last line printed is `ratio X`: our accuracy over math-verify's.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed")


def math_verify_alone(gold: str, completion: str) -> str:
    from math_verify import parse, verify

    summary = completion.split("</think>")[-1]
    wrap = (lambda text: text if _DELIMITED.search(text) else f"${text}$")
    try:
        equal = verify(parse(wrap(gold)), parse(summary))
    except Exception:  # noqa: BLE001 - math-verify's own failure is a failed grade
        equal = False
    return "passed" if equal else "failed"


def ours(check, gold: str, completion: str) -> str:
    return check.check({"gold": gold, "completion": completion}).status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=REPO / "tests/data/answers/holdout.jsonl")
    parser.add_argument("--show-wrong", action="store_true")
    args = parser.parse_args()
    from cotforge.checks import create

    rows = [json.loads(line) for line in args.cases.read_text().splitlines() if line.strip()]
    check = create("answer")
    right = {"cotforge": Counter(), "math-verify": Counter()}
    totals: Counter = Counter()
    wrong = []
    started = time.perf_counter()
    for row in rows:
        totals[row["class"]] += 1
        for name, grade in (("cotforge", lambda r: ours(check, r["gold"], r["completion"])),
                            ("math-verify", lambda r: math_verify_alone(r["gold"], r["completion"]))):
            got = grade(row)
            if got == row["expected"]:
                right[name][row["class"]] += 1
            elif name == "cotforge":
                wrong.append((row["class"], row["gold"], row["completion"][-80:], row["expected"], got))
    elapsed = time.perf_counter() - started
    print(f"{'class':10} {'rows':>5} {'cotforge':>9} {'math-verify':>12}")
    for cls in totals:
        print(f"{cls:10} {totals[cls]:5d} {right['cotforge'][cls]:9d} {right['math-verify'][cls]:12d}")
    n = sum(totals.values())
    ours_acc = sum(right["cotforge"].values()) / n
    mv_acc = sum(right["math-verify"].values()) / n
    if args.show_wrong:
        for item in wrong:
            print("WRONG", item)
    print(f"{n} hold-out rows in {elapsed:.1f}s: cotforge answer accuracy {ours_acc:.3f}, "
          f"math-verify alone {mv_acc:.3f}, ratio {ours_acc / mv_acc:.2f}")


if __name__ == "__main__":
    main()
