"""What each check catches and keeps on real reasoning traces (tests/data/real_traces/).

    python benchmarks/filter_real_traces.py [--traces tests/data/real_traces] [--checks CHECK,...]

The traces are public outputs of models trained on long chains of thought (their README gives the
source). Each is put in one group by rules that do not use any check:
- finished: the model closed its reasoning and wrote a summary (its own end-of-solution marker);
- looping: not finished, and some 200-character block occurs 3+ times in its last 4,000 characters
  (the model went round in circles until its token limit);
- truncated: not finished, not looping (cut by the token limit while still making progress).
For every check, and for the `r1` preset as a whole, it prints the share of each group the check
rejects; the last line compares the new `repetition` check with Gopher's thresholds.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKS = ("format", "language", "repetition", "gopher_repetition", "answer", "paragraph", "code_block", "length")
BLOCK, COPIES, TAIL = 200, 3, 4000


def looping(text: str) -> bool:
    """Some BLOCK-character block occurs COPIES+ times in the last TAIL characters."""
    tail = text[-TAIL:]
    counts: dict[str, int] = defaultdict(int)
    for start in range(max(0, len(tail) - BLOCK)):
        counts[tail[start:start + BLOCK]] += 1
    return any(count >= COPIES for count in counts.values())


def group(row: dict) -> str:
    if row["finished"]:
        return "finished"
    return "looping" if looping(row["completion"]) else "truncated"


def load(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.open(encoding="utf-8")]


def sample_of(row: dict) -> dict:
    return {"completion": row["completion"], "prompt": row["prompt"], "gold": row["gold"],
            "finish_reason": None if row["finished"] else "length"}


def main() -> None:
    from cotforge.checks import create
    from cotforge.checks.chain import Chain

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=REPO / "tests" / "data" / "real_traces")
    parser.add_argument("--checks", default=",".join(CHECKS))
    args = parser.parse_args()
    rows = load(args.traces)
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[group(row)].append(row)
    names = [name.strip() for name in args.checks.split(",") if name.strip()]
    print(f"{len(rows)} traces: " + ", ".join(f"{name} {len(members)}" for name, members in sorted(groups.items())))
    print(f"{'check':<20}" + "".join(f"{name + ' rejected':>22}" for name in sorted(groups)))
    rejected: dict[str, dict[str, int]] = {}
    for name in names:
        check = create(name)
        rejected[name] = {g: sum(not check.check(sample_of(r)).passed for r in members)
                          for g, members in groups.items()}
        print(f"{name:<20}" + "".join(f"{rejected[name][g]:>8}/{len(groups[g]):<4} {100 * rejected[name][g] / len(groups[g]):5.1f}%  "
                                      for g in sorted(groups)))
    chain = Chain.for_data("r1", jobs=0)
    accepted = {g: sum(result.accepted for result in chain.run([sample_of(r) for r in members]))
                for g, members in groups.items()}
    print(f"{'r1 preset kept':<20}" + "".join(f"{accepted[g]:>8}/{len(groups[g]):<4} {100 * accepted[g] / len(groups[g]):5.1f}%  "
                                              for g in sorted(groups)))
    answer = create("answer")
    agree = sum(answer.check(sample_of(r)).passed == r["upstream_correct"] for r in groups["finished"])
    right = sum(r["upstream_correct"] for r in groups["finished"])
    print(f"answer check agrees with the upstream grader on {agree}/{len(groups['finished'])} finished traces "
          f"({right} graded correct upstream)")
    if {"repetition", "gopher_repetition"} <= set(rejected):
        ours, theirs = rejected["repetition"], rejected["gopher_repetition"]
        print(f"repetition vs gopher_repetition: false rejects on finished {ours['finished']}/{len(groups['finished'])} "
              f"vs {theirs['finished']}/{len(groups['finished'])}, catches on looping {ours['looping']}/"
              f"{len(groups['looping'])} vs {theirs['looping']}/{len(groups['looping'])}")


if __name__ == "__main__":
    main()
