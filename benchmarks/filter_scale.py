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

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from childproc import Figures, run_child, size_arguments  # noqa: E402

CHUNK = 250_000  # rows built at once


def write_samples(path: Path, rows: int, seed: int = 0) -> None:
    """JSONL rows (id, prompt, an R1-shaped completion, gold), as before, built as Arrow columns
    (benchmarks/synthetic.py) and written by DuckDB: 1M rows in about a minute, not >15 min.
    A reasoning is 50-300 words; a tenth of the completions never close </think> (format rejects them)."""
    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from synthetic import Phrases, join, numbered

    rng = np.random.default_rng(seed)
    phrases = Phrases(seed)
    for start in range(0, rows, CHUNK):
        count = min(CHUNK, rows - start)
        a, b = rng.integers(10, 1000, count), rng.integers(10, 1000, count)
        a_text, b_text, sum_text = (pa.array(x).cast(pa.string()) for x in (a, b, a + b))
        reasoning = phrases.texts(rng.integers(4, 21, count))  # 40-200 words, as the Python writer drew
        closed = join("</think> The answer is \\boxed{", sum_text, "}.")
        tail = pc.if_else(pa.array(rng.random(count) < 0.9), closed, pa.scalar(""))
        table = pa.table({"id": numbered("s", np.arange(start, start + count), 7),
                          "prompt": join("What is ", a_text, " + ", b_text, "?"),
                          "completion": join("<think>", reasoning, tail), "gold": sum_text})
        part = path.with_name(f"{path.name}.part{start // CHUNK:04d}")
        with duckdb.connect() as con:
            con.execute("SET enable_progress_bar = false")
            con.register("part", table)
            con.execute(f"COPY part TO '{part}' (FORMAT JSON)")
    with open(path, "wb") as out:  # the parts, in order, as one file
        for i in range((rows + CHUNK - 1) // CHUNK):
            part = path.with_name(f"{path.name}.part{i:04d}")
            with open(part, "rb") as handle:
                while block := handle.read(1 << 24):
                    out.write(block)
            part.unlink()


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
                  f"CPU {1e6 * r['cpu_s'] / r['rows']:.0f} us/row (+ the check worker {1e6 * r['children_cpu_s'] / r['rows']:.0f})  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB  accepted {r['accepted']:,}", flush=True)
    small, large = (results[s] for s in sizes)
    print(f"peak RSS {sizes[0]:,} rows {small['peak_rss_mb']:.0f} MB, {sizes[1]:,} rows {large['peak_rss_mb']:.0f} MB "
          f"(x{large['peak_rss_mb'] / small['peak_rss_mb']:.2f})")
    speed = (large["rows"] / large["seconds"]) / (small["rows"] / small["seconds"])
    print(f"rows/s {sizes[1]:,} rows / {sizes[0]:,} rows: ratio {speed:.2f}")


if __name__ == "__main__":
    main()
