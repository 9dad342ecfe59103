"""Does `cotforge mix` keep memory flat as the data grows?

Writes synthetic run folders (2 samples per prompt, 4 domains, ~2% planted exact and ~2% planted
near duplicates, a few eval-contaminated prompts), then mixes each in a fresh subprocess with
per_prompt 1, a 50% quota, exact + near dedup and decontamination, and prints rows/s and the
child's peak RSS. The kept rows (and so the dedup index) grow with the data; the index lives on disk.

    python benchmarks/mix_scale.py            # 100K and 1M rows
    python benchmarks/mix_scale.py --quick    # 20K and 200K rows

The LAST line is `ratio X`: peak RSS of the small run / peak RSS of the large run (1.0 = flat).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from childproc import Figures, run_child, size_arguments  # noqa: E402

from cotforge.io.rundir import RunDir
from cotforge.schema import SAMPLE_SCHEMA

WORDS = [f"w{i}" for i in range(5000)]
EVAL = "a train leaves the station at noon and travels at sixty miles per hour toward a city far away"
DOMAINS = ("math", "code", "science", "logic")
CHUNK = 50_000


def _prompt(rng: random.Random, p: int) -> str:
    if p % 5000 == 7:
        return f"Question {p}: {EVAL} and then what?"
    return f"Question {p}: " + " ".join(rng.choice(WORDS) for _ in range(25))


def write_run(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    run = RunDir.open(path, "filter", {"synthetic": rows}, [])
    buffer: dict[str, list] = {name: [] for name in SAMPLE_SCHEMA.names}
    prev_prompt = last_summary = ""
    for i in range(rows):
        p = i // 2
        prompt = _prompt(random.Random(p), p)
        summary = " ".join(rng.choice(WORDS) for _ in range(60))
        roll = rng.random()
        if roll < 0.02 and last_summary:  # exact duplicate of the previous prompt's answer, same prompt text
            prompt, summary = prev_prompt, last_summary
        elif roll < 0.04 and last_summary:  # near duplicate: one word changed
            words = last_summary.split()
            words[30] = "changed"
            prompt, summary = prev_prompt, " ".join(words)
        reasoning = " ".join(rng.choice(WORDS) for _ in range(rng.randint(50, 300)))
        values = {"id": f"s{i}", "prompt_id": f"p{p}" if roll >= 0.04 else f"d{i}", "sample_idx": i % 2,
                  "prompt": prompt, "domain": DOMAINS[p % 4], "source": "synthetic", "reasoning": reasoning,
                  "summary": summary, "completion": f"<think>{reasoning}</think>{summary}", "accepted": True}
        for name in SAMPLE_SCHEMA.names:
            buffer[name].append(values.get(name))
        prev_prompt, last_summary = prompt, summary
        if len(buffer["id"]) == CHUNK or i == rows - 1:
            run.write_shard("samples", i // CHUNK, pa.table(buffer, schema=SAMPLE_SCHEMA))
            buffer = {name: [] for name in SAMPLE_SCHEMA.names}
    run.update_manifest(status="complete")


def child(recipe: str, out: str) -> None:
    from cotforge.mix import mix

    figures = Figures()
    report = mix(recipe, out)
    figures.report(considered=report["considered"], kept=report["kept"], dropped=report["dropped"])


def measure(workdir: Path, rows: int) -> dict:
    data = workdir / f"run-{rows}"
    write_run(data, rows)
    (workdir / "eval.jsonl").write_text(json.dumps({"problem": EVAL}) + "\n")
    recipe = workdir / f"recipe-{rows}.yaml"
    recipe.write_text(f"""
seed: 0
sources:
  - {{name: reasoning, path: {data.name}, per_prompt: 1, select: shortest, quota: 0.5}}
dedup: {{exact: true, near: {{threshold: 0.8}}}}
decontaminate: {{against: [eval.jsonl], ngram: 13}}
""")
    return run_child(__file__, [recipe, workdir / f"mix-{rows}"], f"mix of {rows:,} rows")


def main() -> None:
    args = size_arguments(__doc__.splitlines()[0], ("RECIPE", "OUT"))
    if args.child:
        child(*args.child)
        return
    sizes = args.sizes
    results = {}
    with tempfile.TemporaryDirectory(prefix="cotforge-mix-bench-") as tmp:
        for rows in sizes:
            r = results[rows] = measure(Path(tmp), rows)
            print(f"{rows:>9,} rows: {r['considered'] / r['seconds']:>8,.0f} rows/s  ({r['seconds']:.1f} s)  "
                  f"CPU {1e6 * r['cpu_s'] / r['considered']:.0f} us/row  peak RSS {r['peak_rss_mb']:.0f} MB  kept {r['kept']:,}  dropped {r['dropped']}", flush=True)
    speed = [results[s]["considered"] / results[s]["seconds"] for s in sizes]
    print(f"rows/s {sizes[1]:,} rows / {sizes[0]:,} rows: {speed[1] / speed[0]:.2f} (1.0 = flat)")
    small, large = (results[s]["peak_rss_mb"] for s in sizes)
    print(f"peak RSS {sizes[0]:,} rows {small:.0f} MB / {sizes[1]:,} rows {large:.0f} MB: ratio {small / large:.2f}")


if __name__ == "__main__":
    main()
