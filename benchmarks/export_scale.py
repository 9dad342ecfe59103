"""Export at scale: shard sizes, throughput and peak memory of `cotforge export` at N and 4N rows.

A run folder of synthetic accepted samples (~2 KB of reasoning each, varied digits so Parquet cannot
squeeze them away) is built at N and 4N rows; each is exported in a fresh process with
`--max-shard-size` (default 20MB here, so that 4N rows make many shards), and the process's peak RSS,
rows/s and every shard's size are printed. The data card (its statistics are DuckDB aggregates) is
part of what is timed and measured. Baseline: the N-row export in the same run.
Last line: ratio = peak RSS at 4N / peak RSS at N (flat memory: close to 1).

    python benchmarks/export_scale.py [--rows 25000] [--max-shard-size 20MB]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from cotforge.export import export
from cotforge.io.sizes import parse_size
start = time.perf_counter()
summary = export(sys.argv[1], sys.argv[2], max_shard_bytes=parse_size(sys.argv[3]))
seconds = time.perf_counter() - start
print(json.dumps({"rows": summary["rows"], "shards": summary["shards"], "seconds": seconds,
                  "sizes": [__import__("os").path.getsize(f) for f in summary["files"]],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_run(path: Path, rows: int, chunk: int = 5000) -> None:
    from cotforge.io.rundir import RunDir
    from cotforge.schema import SAMPLE_SCHEMA, to_table

    rng = random.Random(0)
    run = RunDir.open(path, "filter", {"checks": ["format"]}, [])
    for index, start in enumerate(range(0, rows, chunk)):
        batch = []
        for i in range(start, min(rows, start + chunk)):
            reasoning = " ".join(f"{rng.random():.9f}" for _ in range(150 + i % 100))
            summary = f"The answer is {i}."
            batch.append({"id": f"s{i}", "prompt_id": f"p{i}", "sample_idx": 0, "prompt": f"Question {i}?",
                          "domain": "math", "source": "bench", "reasoning": reasoning, "summary": summary,
                          "completion": f"<think>{reasoning}</think>{summary}", "accepted": True,
                          "verdicts": [{"check": "format", "passed": True, "score": None, "reason": None}]})
        run.write_shard("samples", index, to_table(batch, SAMPLE_SCHEMA))
    run.update_manifest(status="complete", funnel=[{"stage": "rows in", "rows": rows}])
    run.close()


def measure(run: Path, out: Path, size: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(run), str(out), size], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=25_000)
    parser.add_argument("--max-shard-size", default="20MB")
    args = parser.parse_args()
    from cotforge.io.sizes import parse_size

    bound = parse_size(args.max_shard_size)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, rows in (("N", args.rows), ("4N", 4 * args.rows)):
            run = Path(tmp) / f"run-{label}"
            started = time.perf_counter()
            build_run(run, rows)
            built = time.perf_counter() - started
            got = measure(run, Path(tmp) / f"out-{label}", args.max_shard_size)
            results[label] = got
            sizes = got["sizes"]
            print(f"{label}: {got['rows']:,} rows (run built in {built:.1f} s) -> {got['shards']} shards, "
                  f"{sum(sizes) / 1e6:.1f} MB; largest {max(sizes) / 1e6:.2f} MB, smallest but last "
                  f"{min(sizes[:-1] or sizes) / 1e6:.2f} MB (bound {bound / 1e6:.1f} MB); "
                  f"{got['rows'] / got['seconds']:,.0f} rows/s; peak RSS {got['peak_rss_mb']:.0f} MB")
            assert max(sizes) <= bound * 1.3, "a shard is far over its bound"
    ratio = results["4N"]["peak_rss_mb"] / results["N"]["peak_rss_mb"]
    speed = (results["4N"]["rows"] / results["4N"]["seconds"]) / (results["N"]["rows"] / results["N"]["seconds"])
    print(f"export peak RSS 4N/N ({4 * args.rows:,} vs {args.rows:,} rows, baseline N): ratio {ratio:.2f} "
          f"(throughput 4N/N {speed:.2f})")


if __name__ == "__main__":
    main()
