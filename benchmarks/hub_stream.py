"""How much of a Hub dataset `read_rows("hf://datasets/...")` fetches and holds to yield its first rows.

A loopback Hub (tests/hubserver.py: nothing reaches the real one) serves one dataset as a single
Parquet file and one as a single JSONL file, each about `--mb` MB of ~2 KB rows. A fresh process
reads the first 10 rows of each and, separately, all rows; the server counts the bytes it sent per
ranged GET, the process reports its peak RSS. Baseline: the file's size.
Last line: ratio = bytes fetched for the first 10 Parquet rows / the Parquet file's size.

    python benchmarks/hub_stream.py [--mb 40]
"""

from __future__ import annotations

import argparse
import json
import random
import string
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hub_data import jsonl_bytes, parquet_bytes  # noqa: E402
from hubserver import FakeHub  # noqa: E402

CHILD = r"""
import itertools, json, resource, sys, time
from cotforge.io.readers import read_rows
start = time.perf_counter()
rows = itertools.islice(read_rows(sys.argv[1]), int(sys.argv[2]) if sys.argv[2] != "all" else None)
count = sum(1 for _ in rows)
print(json.dumps({"rows": count, "seconds": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=40)
    args = parser.parse_args()
    rng = random.Random(0)
    n = int(args.mb * 1e6 / 2000)
    rows = [{"problem": "".join(rng.choices(string.ascii_letters, k=2000)), "answer": str(i)} for i in range(n)]
    files = {"org/parquet": ("data/train-00000-of-00001.parquet", parquet_bytes(rows, row_group_size=500)),
             "org/jsonl": ("train.jsonl", jsonl_bytes(rows))}
    hub = FakeHub()
    for repo, (name, data) in files.items():
        hub.add_dataset(repo, {name: data})
    ratio = None
    with hub.serving():
        env = {**hub.env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        for repo, (name, data) in files.items():
            for limit in ("10", "all"):
                hub.served.clear()
                result = subprocess.run([sys.executable, "-c", CHILD, f"hf://datasets/{repo}", limit], env=env,
                                        capture_output=True, text=True, check=True)
                got = json.loads(result.stdout.strip().splitlines()[-1])
                fetched = sum(size for _, size in hub.served)
                largest = max((size for _, size in hub.served), default=0)
                print(f"{repo} ({len(data) / 1e6:.1f} MB, {n:,} rows), {'first 10' if limit == '10' else 'all'} rows: {got['rows']:,} rows in "
                      f"{got['seconds']:.1f} s; fetched {fetched / 1e6:.1f} MB in {len(hub.served)} GETs "
                      f"(largest {largest / 1e6:.1f} MB); peak RSS {got['peak_rss_mb']:.0f} MB")
                if repo == "org/parquet" and limit == "10":
                    ratio = fetched / len(data)
    print(f"bytes fetched for the first 10 Parquet rows / file size (baseline: the file): ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
