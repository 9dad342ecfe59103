"""Calibrate `repetition_detection` (vLLM's rule, `cotforge.engines.repetition`) on real traces, offline.

The 184 public Sky-T1 traces of tests/data/real_traces, grouped as benchmarks/filter_real_traces.py
groups them (finished: closed reasoning and a summary; looping: unfinished, a 200-character block 3+
times in its last 4,000; truncated: the rest), tokenized with the embedded SmolLM2 tokenizer (the
Qwen tokenizer the traces were sampled with is not available offline; both are byte-level BPEs, so
a repeated sentence is a repeated token pattern in either). Each trace is replayed through the rule as
an engine checking after every token would: a finished trace stopped anywhere is a false stop; a
looping trace stopped is a catch, and the tokens after the stop are saved.

For pattern size p, "the last p tokens repeat c - 1 times" holds at token i exactly when the run of
positions j <= i with t[j] == t[j - p] is at least p * (c - 1) long, so one pass per p finds the first
stop of every rule (numpy), and the grid costs seconds.

    python benchmarks/calibrate_repetition.py

Last line: ratio = share of looping traces the chosen default catches (false stops must be 0).
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from filter_real_traces import group  # noqa: E402

from cotforge.engines.base import RepetitionDetection  # noqa: E402
from cotforge.engines.repetition import DEFAULT, first_repetition  # noqa: E402

MAX_P = 256
COUNTS = (3, 4, 5, 6, 8, 10)
MIN_PS = (1, 2, 4, 8, 16)
MAX_PS = (16, 32, 64, 128, 256)


def tokenizer():
    from transformers import AutoTokenizer

    from cotforge.engines.gguf import shipped_gguf, split_model_path

    folder, gguf_file = split_model_path(shipped_gguf())
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)


def first_stops(tokens: np.ndarray) -> dict[tuple[int, int], int]:
    """(p, c) -> the token count at which a pattern of size p repeated c times first ends the sequence."""
    out = {}
    n = len(tokens)
    for p in range(1, MAX_P + 1):
        if p * 2 > n:
            break
        equal = np.concatenate([np.zeros(p, dtype=bool), tokens[p:] == tokens[:-p]])
        # streak[i]: consecutive True ending at i
        idx = np.arange(n)
        last_false = np.maximum.accumulate(np.where(~equal, idx, -1))
        streak = idx - last_false
        for c in COUNTS:
            hits = np.nonzero(streak >= p * (c - 1))[0]
            if hits.size:
                out[(p, c)] = int(hits[0]) + 1
    return out


def stop_at(stops: dict, rule: RepetitionDetection) -> int | None:
    found = [stops[(p, rule.min_count)] for p in range(max(rule.min_pattern_size, 1), rule.max_pattern_size + 1)
             if (p, rule.min_count) in stops]
    return min(found) if found else None


def main() -> None:
    rows = [json.loads(line) for line in (REPO / "tests/data/real_traces/sky_t1_math.jsonl").read_text().splitlines()]
    tok = tokenizer()
    groups: dict[str, list] = {"finished": [], "looping": [], "truncated": []}
    for row in rows:
        ids = np.array(tok(row["completion"], add_special_tokens=False)["input_ids"], dtype=np.int64)
        groups[group(row)].append((ids, first_stops(ids)))
    sizes = {name: len(items) for name, items in groups.items()}
    print(f"traces: {sizes}; tokens per trace (median): "
          + ", ".join(f"{k} {int(np.median([len(i) for i, _ in v]))}" for k, v in groups.items() if v))
    # the offline replay agrees with the rule as engines run it (engines.repetition), on a few traces
    for ids, stops in groups["looping"][:3]:
        assert stop_at(stops, DEFAULT) == first_repetition(ids.tolist(), DEFAULT)
    results = []
    for min_p, max_p, count in itertools.product(MIN_PS, MAX_PS, COUNTS):
        if min_p > max_p:
            continue
        rule = RepetitionDetection(max_p, min_p, count)
        false = sum(stop_at(s, rule) is not None for _, s in groups["finished"])
        caught = [(len(ids), stop_at(s, rule)) for ids, s in groups["looping"]]
        catches = sum(at is not None for _, at in caught)
        saved = sum(n - at for n, at in caught if at is not None) / max(sum(n for n, _ in caught), 1)
        truncated = sum(stop_at(s, rule) is not None for _, s in groups["truncated"])
        results.append((false, -catches, -saved, rule, truncated))
    results.sort(key=lambda r: (r[0], r[1], r[2]))
    print("rules with 0 false stops on finished traces, most catches first (min_pattern, max_pattern, min_count):")
    for false, catches, saved, rule, truncated in [r for r in results if r[0] == 0][:8]:
        print(f"  ({rule.min_pattern_size:>2}, {rule.max_pattern_size:>3}, {rule.min_count:>2}): catches "
              f"{-catches}/{sizes['looping']} looping, saves {-saved:.0%} of their tokens, stops "
              f"{truncated}/{sizes['truncated']} truncated")
    for false, catches, saved, rule, truncated in results:
        if rule == DEFAULT:
            print(f"default {DEFAULT}: false stops {false}/{sizes['finished']} finished, catches {-catches}/"
                  f"{sizes['looping']} looping ({-saved:.0%} of their tokens saved), stops {truncated}/"
                  f"{sizes['truncated']} truncated")
            print(f"calibrate_repetition: looping traces caught by the default: ratio "
                  f"{-catches / max(sizes['looping'], 1):.2f} (false stops {false})")


if __name__ == "__main__":
    main()
