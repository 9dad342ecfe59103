"""Does `cotforge filter` keep throughput and memory flat as the input grows?

Writes synthetic samples (JSONL: id, prompt, an R1-shaped completion, gold) and filters each size in a
fresh subprocess with the `format` check (cheap, so the driver's own costs show: reading, normalizing,
id bookkeeping, chunk commits) and one check worker. Prints rows/s and the driver's peak RSS.

    python benchmarks/filter_scale.py            # 100K and 1M rows
    python benchmarks/filter_scale.py --quick    # 20K and 200K rows

The LAST line: `rows/s ... ratio X` = rows/s of the large run / the small run (1.0 = flat);
the line above it gives the peak RSS of both.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from childproc import Figures, run_child, size_arguments  # noqa: E402

WORDS = [f"w{i}" for i in range(5000)]


def write_samples(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            reasoning = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 200)))
            closed = rng.random() < 0.9  # a tenth never close </think>: rejected by format
            completion = f"<think>{reasoning}" + (f"</think> The answer is \\boxed{{{a + b}}}." if closed else "")
            handle.write(json.dumps({"id": f"s{i:07d}", "prompt": f"What is {a} + {b}?", "completion": completion,
                                     "gold": str(a + b)}) + "\n")


def child(samples: str, out: str) -> None:
    from cotforge.filtering import filter_samples

    figures = Figures()
    counts = filter_samples([samples], out, checks="format", jobs=1)
    figures.report(rows=counts["rows_read"], accepted=counts["accepted"])


def measure(workdir: Path, rows: int) -> dict:
    samples = workdir / f"samples-{rows}.jsonl"
    write_samples(samples, rows)
    figures = run_child(__file__, [samples, workdir / f"run-{rows}"], f"filter of {rows:,} rows")
    samples.unlink()
    return figures


def main() -> None:
    args = size_arguments(__doc__.splitlines()[0], ("SAMPLES", "OUT"))
    if args.child:
        child(*args.child)
        return
    sizes = args.sizes
    results = {}
    with tempfile.TemporaryDirectory(prefix="cotforge-filter-bench-") as tmp:
        for rows in sizes:
            r = results[rows] = measure(Path(tmp), rows)
            print(f"{rows:>9,} rows: {r['rows'] / r['seconds']:>8,.0f} rows/s  ({r['seconds']:.1f} s)  "
                  f"CPU {1e6 * r['cpu_s'] / r['rows']:.0f} us/row  peak RSS {r['peak_rss_mb']:.0f} MB  accepted {r['accepted']:,}", flush=True)
    small, large = (results[s] for s in sizes)
    print(f"peak RSS {sizes[0]:,} rows {small['peak_rss_mb']:.0f} MB, {sizes[1]:,} rows {large['peak_rss_mb']:.0f} MB "
          f"(x{large['peak_rss_mb'] / small['peak_rss_mb']:.2f})")
    speed = (large["rows"] / large["seconds"]) / (small["rows"] / small["seconds"])
    print(f"rows/s {sizes[1]:,} rows / {sizes[0]:,} rows: ratio {speed:.2f}")


if __name__ == "__main__":
    main()
