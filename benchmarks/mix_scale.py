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
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from childproc import Figures, run_child, size_arguments  # noqa: E402

from cotforge.io.rundir import RunDir
from cotforge.schema import SAMPLE_SCHEMA

EVAL = "a train leaves the station at noon and travels at sixty miles per hour toward a city far away"
DOMAINS = ("math", "code", "science", "logic")
CHUNK = 50_000
SUMMARY_PHRASES = 6  # 60 words, as before; a near duplicate changes word 30 (phrase 3's first word)


def write_run(path: Path, rows: int, seed: int = 0) -> None:
    """Rows as the Python writer made them (2 samples per prompt, ~2% exact and ~2% near duplicates
    of the previous row's prompt and summary, every 5000th prompt contaminated), built as Arrow
    columns (benchmarks/synthetic.py): 1M rows in about a minute."""
    import numpy as np
    import pyarrow.compute as pc

    from synthetic import Phrases, join, numbered

    rng = np.random.default_rng(seed)
    phrases = Phrases(seed)
    # Prompts: both samples of prompt p share its text ("Question p: " + 25 words ~ 3 phrases).
    prompt_count = (rows + 1) // 2
    prompt_words, _ = phrases.fixed(prompt_count, 3)
    prompt_text = join(numbered("Question ", np.arange(prompt_count)), ": ", prompt_words)
    contaminated = np.arange(prompt_count) % 5000 == 7
    prompt_text = pc.if_else(pa.array(contaminated),
                             join(numbered("Question ", np.arange(prompt_count)), f": {EVAL} and then what?"),
                             prompt_text)
    p = np.arange(rows) // 2
    summary, picks = phrases.fixed(rows, SUMMARY_PHRASES)
    roll = rng.random(rows)
    roll[0] = 1.0  # the first row has no previous one to copy
    # A planted row copies the previous row's prompt and summary (as that row ended up: a chain of
    # planted rows goes back to its first unplanted one); a near one has word 30 changed too.
    source, near = np.arange(rows), roll < 0.04
    for i in np.flatnonzero(roll < 0.04):
        source[i] = source[i - 1]
        near[i] = roll[i] >= 0.02 or near[i - 1]
    near &= roll < 0.04
    changed = pa.array([" ".join(["changed"] + text.split()[1:]) for text in phrases.pool.to_pylist()])
    near_summary = pc.binary_join_element_wise(
        *[(changed if j == 3 else phrases.pool).take(pa.array(picks[source, j])) for j in range(SUMMARY_PHRASES)], " ")
    summary = pc.if_else(pa.array(near), near_summary, summary.take(pa.array(source)))
    prompt = prompt_text.take(pa.array(p[source]))
    reasoning = phrases.texts(rng.integers(5, 31, rows))  # 50-300 words
    prompt_id = pc.if_else(pa.array(roll >= 0.04), numbered("p", p), numbered("d", np.arange(rows)))
    columns = {"id": numbered("s", np.arange(rows)), "prompt_id": prompt_id, "sample_idx": pa.array(np.arange(rows) % 2),
               "prompt": prompt, "domain": pa.array(np.array(DOMAINS)[p % 4]), "source": pa.array(["synthetic"] * rows),
               "reasoning": reasoning, "summary": summary,
               "completion": join("<think>", reasoning, "</think>", summary), "accepted": pa.array(np.ones(rows, bool))}
    table = pa.table({name: columns[name].cast(SAMPLE_SCHEMA.field(name).type) if name in columns
                      else pa.nulls(rows, SAMPLE_SCHEMA.field(name).type) for name in SAMPLE_SCHEMA.names},
                     schema=SAMPLE_SCHEMA)
    run = RunDir.open(path, "filter", {"synthetic": rows}, [])
    for index, start in enumerate(range(0, rows, CHUNK)):
        run.write_shard("samples", index, table.slice(start, CHUNK))
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
