"""How fast `cotforge view` opens a big run: seconds to the first response of each page on a synthetic
run of N samples (default 1M), served in process (Starlette's test client, no network in the timing).

Baseline: loading the run's samples table into pandas, the first step of a notebook (and of any viewer
that is not paged on the server). The last line: `ratio X` = baseline seconds / overview seconds.

    python benchmarks/view_first_page.py [--rows 1000000] [--keep DIR]
Needs `.[curate,test]` (starlette, httpx).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from cotforge.io.rundir import RunDir
from cotforge.query import sql_literal
from cotforge.schema import SAMPLE_SCHEMA
from cotforge.stats import run_counts

SHARD_ROWS = 100_000
CHECKS = ("format", "answer", "language")


def make_run(folder: Path, rows: int) -> Path:
    """A filter-like run: 3 checks, ~40% rejected, 4 samples per prompt, texts of a few hundred characters."""
    run = RunDir.open(folder, "filter", {"checks": list(CHECKS), "synthetic": rows}, [])
    con = duckdb.connect()
    con.execute("SET threads=2")
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    columns = ", ".join(f"NULL::{_duck(t)} AS {n}" for n, t in zip(SAMPLE_SCHEMA.names, SAMPLE_SCHEMA.types)
                        if n not in _FILLED)
    for shard, start in enumerate(range(0, rows, SHARD_ROWS)):
        end = min(rows, start + SHARD_ROWS)
        con.execute(f"""COPY (
            SELECT 'p' || lpad((i // 4)::VARCHAR, 8, '0') || '-' || (i % 4) AS id,
                   'p' || lpad((i // 4)::VARCHAR, 8, '0') AS prompt_id, (i % 4)::INT AS sample_idx,
                   'What is ' || (i // 4) || ' plus ' || (i % 97) || '? Think step by step and put the answer in a box.' AS prompt,
                   ((i // 4) + (i % 97))::VARCHAR AS gold,
                   repeat('We add the numbers carefully, carrying where needed. ', 6) || ' $a+b=' || i || '$' AS reasoning,
                   'The answer is $\\boxed{{' || i || '}}$.' AS summary,
                   (120 + i % 300)::INT AS completion_tokens,
                   [{{'check': 'format', 'passed': i % 10 <> 0, 'score': NULL::DOUBLE, 'reason': CASE WHEN i % 10 = 0 THEN 'no </think> closing the reasoning' ELSE 'ok' END}},
                    {{'check': 'answer', 'passed': i % 3 <> 0, 'score': NULL::DOUBLE, 'reason': CASE WHEN i % 3 = 0 THEN 'answer ' || i || ' != gold ' || (i + 1) || ' (number)' ELSE 'ok' END}},
                    {{'check': 'language', 'passed': i % 50 <> 7, 'score': NULL::DOUBLE, 'reason': CASE WHEN i % 50 = 7 THEN 'share 0.' || (i % 90) || ' < 0.95' ELSE 'ok' END}}] AS verdicts,
                   (i % 10 <> 0 AND i % 3 <> 0 AND i % 50 <> 7) AS accepted,
                   {columns}
            FROM range({start}, {end}) t(i)) TO {sql_literal(run.shard_path('samples', shard))} (FORMAT parquet)""")
    counts = run_counts(folder, list(CHECKS))
    run.update_manifest(status="complete", counts={k: counts[k] for k in ("rows_read", "accepted", "rejected")},
                        funnel=counts["funnel"])
    run.close()
    return folder


_FILLED = {"id", "prompt_id", "sample_idx", "prompt", "gold", "reasoning", "summary", "completion_tokens", "verdicts",
           "accepted"}


def _duck(arrow_type) -> str:
    return {"string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN"}.get(
        str(arrow_type), "VARCHAR")


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the run here instead of a temp folder")
    args = parser.parse_args()
    from starlette.testclient import TestClient

    from cotforge.view.app import ViewApp

    folder = args.keep or Path(tempfile.mkdtemp(prefix="view-bench-"))
    try:
        if not (folder / "manifest.json").exists():
            print(f"building a {args.rows:,}-sample run: {timed(lambda: make_run(folder, args.rows)):.1f} s")
        web = TestClient(ViewApp([folder]).asgi(allowed_hosts=["testserver"]))

        def get(url: str) -> None:
            response = web.get(url)
            assert response.status_code == 200, (url, response.status_code, response.text[:300])

        pages = [("overview (first open)", "/run/0"), ("overview (again)", "/run/0"),
                 ("samples, first page", "/run/0/samples"),
                 ("samples failing answer, page 100", "/run/0/samples?check=answer&page=100"),
                 ("one sample with next/previous", "/run/0/sample?id=p00012345-2&status=rejected"),
                 ("prompts by pass rate", "/run/0/prompts?sort=pass_rate"),
                 ("never-passing prompts", "/run/0/prompts?never=1")]
        seconds = {}
        for name, url in pages:
            seconds[name] = timed(lambda url=url: get(url))
            print(f"{name:36} {seconds[name]:6.2f} s")
        baseline = timed(lambda: RunDir(folder).read_table("samples").to_pandas())
        print(f"{'baseline: samples table into pandas':36} {baseline:6.2f} s")
        first = seconds["overview (first open)"]
        print(f"view first page {first:.2f} s vs pandas load {baseline:.2f} s on {args.rows:,} samples: "
              f"ratio {baseline / first:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
