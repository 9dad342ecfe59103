"""What the `cotforge generate` driver itself costs at 100K and 1M prompts.

The engine answers every request at once (`InstantEngine`, in this process), so the figures are the
driver's own: reading and writing the prompts, planning waves, building sample rows, the `format`
check (inline, `jobs=0`: no worker processes, so every cycle spent is this process's), committing
shards at the default `shard_size`. k=4, one wave per prompt (4 samples each: 400K and 4M samples).

Each size runs in fresh subprocesses (peak RSS is per process):
1. the full run: peak RSS, time from the `generate()` call to the first request, samples/s, and the
   driver's CPU seconds per sample (user + system of the process; it has no children);
2. the same command on the complete run (a resume with every sample committed): wall time to done;
3. a resume after a kill that lost the last `LOST` samples (their shards removed, the manifest back to
   `running`): time to the first request, and to done.

Targets (issue 20): peak RSS at 1M < 3x that at 100K; a resume of the 1M run sends its first request
within 30 s; the driver keeps up with 5,000 finished samples/s (CPU per sample < 200 us).

    python benchmarks/generate_scale.py                 # 100K and 1M prompts
    python benchmarks/generate_scale.py --quick         # 10K and 100K
    python benchmarks/generate_scale.py --sizes 20000   # any sizes; the ratio is last / first
    python benchmarks/generate_scale.py --written 1000000   # steps 2-3 only, on a run folder written
        # directly with the rows step 1 commits (when step 1 at 1M is too slow for the machine);
        # between them, step 2 again with the tally files removed (a run written before tallies)
    python benchmarks/generate_scale.py --written 1000000 --keep DIR   # the same, the folder kept
    python benchmarks/generate_scale.py --first-request DIR/prompts-1000000.jsonl DIR/run-1000000
        # step 3's first request only, on a kept folder (stops there: no end-of-run statistics)

The LAST line: `peak RSS ... ratio X` = peak RSS of the largest run / the smallest (target < 3).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import childproc  # noqa: E402
from childproc import Figures  # noqa: E402
from cotforge.engines.base import Completion, Engine, Finished, Request, SamplingParams  # noqa: E402

K = 4
LOST = 2000  # samples the killed run of step 3 had not committed
STOP_AT_FIRST = "COTFORGE_BENCH_STOP_AT_FIRST"  # the child reports at the first request and exits
INFLIGHT = 4096  # sequences in flight: a fleet of a few dozen busy servers


class InstantEngine(Engine):
    """Answers each request the moment it is submitted, with a short R1-shaped completion."""

    name = "instant"
    model = "instant"
    max_inflight = INFLIGHT

    def __init__(self) -> None:
        self.first_request_at: float | None = None
        self.stop_at_first: Figures | None = None  # set: report and exit at the first request
        self.requests = 0
        self._done: list[Finished] = []
        self._inflight = 0

    @property
    def inflight(self) -> int:
        return self._inflight

    def submit(self, request: Request, params: SamplingParams) -> None:
        if self.first_request_at is None:
            self.first_request_at = time.perf_counter()
            if self.stop_at_first is not None:  # --first-request: the figures so far, then exit as a kill would
                self.stop_at_first.report(first_request_s=self.first_request_at - self.stop_at_first.start)
                os._exit(0)
        self.requests += 1
        self._inflight += request.n
        text = f"<think>Add the numbers for {request.key}.</think> The answer is \\boxed{{{len(request.key)}}}."
        self._done.append(Finished(request, [Completion(text, "stop", 40, 20) for _ in range(request.n)]))

    def cancel(self, requests: list[Request]) -> None:
        pass  # answered at once: nothing is ever running to cancel

    def poll(self, timeout_s: float = 0.0) -> list[Finished]:
        done, self._done = self._done, []
        self._inflight -= sum(f.request.n for f in done)
        return done


def write_prompts(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            a, b = i % 997, (i * 7) % 991
            handle.write(json.dumps({"id": f"p{i:07d}", "prompt": f"Question {i}: what is {a} + {b}?",
                                     "gold": str(a + b), "domain": "math"}) + "\n")


def bench_config():
    from cotforge.generate import GenerateConfig

    return GenerateConfig(engine="instant", k=K, accept=1, max_rounds=1, max_tokens=64, checks="format", jobs=0)


def write_complete_run(prompts: Path, out: Path) -> int:
    """The run folder step 1 leaves, written directly: the same prompts shard and manifest (the
    scheduler writes them), then every sample row the instant engine and `format` would give, 256 a
    shard, with the resume index. Returns the shards written. Columns are built a prompts batch at
    a time and sliced into shards (row dicts took ~30 min for 1M prompts' 15,600 shards here)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cotforge.generate.config import sample_seed
    from cotforge.generate.resume import KeyIndex
    from cotforge.generate.scheduler import Scheduler
    from cotforge.io.rundir import RunDir
    from cotforge.schema import SAMPLE_SCHEMA
    from cotforge.tally import TallyIndex

    config = bench_config()
    Scheduler(prompts, out, config, engine=InstantEngine()).close()
    run = RunDir(out)
    (out / "samples").mkdir(exist_ok=True)
    index, tallies, shard = KeyIndex(run, 0, []), TallyIndex(run), 0
    verdict = [{"check": "format", "passed": True, "score": 1.0, "reason": "ok", "status": "passed", "code": None}]
    for batch in pq.ParquetFile(run.shard_path("prompts", 0)).iter_batches(batch_size=config.shard_size * 64):
        ids = batch.column("id").to_pylist()
        texts = [f"<think>Add the numbers for {pid}.</think> The answer is \\boxed{{{len(pid)}}}." for pid in ids]
        rows = len(ids) * K
        repeat = [i for i in range(len(ids)) for _ in range(K)]  # each prompt's row, K times
        columns = {
            "id": [f"{pid}-{j}" for pid in ids for j in range(K)],
            "prompt_id": [ids[i] for i in repeat], "sample_idx": list(range(K)) * len(ids), "round": [0] * rows,
            "prompt": [p for p in batch.column("prompt").to_pylist() for _ in range(K)],
            "gold": [g for g in batch.column("gold").to_pylist() for _ in range(K)],
            "domain": [d for d in batch.column("domain").to_pylist() for _ in range(K)],
            "model": ["instant"] * rows, "engine": ["instant"] * rows, "temperature": [config.temperature] * rows,
            "top_p": [config.top_p] * rows, "max_tokens": [config.max_tokens] * rows,
            "seed": [sample_seed(config.seed, pid, 0) + j for pid in ids for j in range(K)],
            "completion": [texts[i] for i in repeat],
            "reasoning": [f"Add the numbers for {ids[i]}." for i in repeat],
            "summary": [texts[i].split("</think> ")[1] for i in repeat],
            "finish_reason": ["stop"] * rows, "prompt_tokens": [40] * rows, "completion_tokens": [20] * rows,
            "verdicts": [verdict] * rows, "accepted": [True] * rows,
        }
        table = pa.Table.from_pydict({name: columns.get(name, [None] * rows) for name in SAMPLE_SCHEMA.names},
                                     schema=SAMPLE_SCHEMA)
        for offset in range(0, rows, config.shard_size):
            part = table.slice(offset, config.shard_size)
            pq.write_table(part, run.shard_path("samples", shard), compression="zstd")
            index.record_table(shard, part)
            tallies.record("samples", shard, part)
            shard += 1
    tallies.flush()
    return shard


def child(prompts: str, out: str) -> None:
    from cotforge.generate import generate
    from cotforge.generate.scheduler import Scheduler

    config = bench_config()
    engine = InstantEngine()
    marks: dict[str, float] = {}
    finish = Scheduler.finish

    def timed_finish(self, seconds):  # the loop's end: what follows is the end-of-run statistics
        marks["loop_cpu"], marks["loop_end"] = time.process_time(), time.perf_counter()
        return finish(self, seconds)

    Scheduler.finish = timed_finish
    figures = Figures()
    if os.environ.get(STOP_AT_FIRST):
        engine.stop_at_first = figures
    summary = generate(prompts, out, config, engine=engine)
    figures.report(
        requests=engine.requests, samples_total=summary["samples"],
        # CPU (user + system, every thread) from the call to the last commit; the rest is finish()
        loop_cpu_s=marks["loop_cpu"] - figures.cpu0, finish_s=time.perf_counter() - marks["loop_end"],
        first_request_s=(engine.first_request_at - figures.start) if engine.first_request_at else None)


def run_child(prompts: Path, out: Path) -> dict:
    return childproc.run_child(__file__, [prompts, out], f"generate on {prompts}")


def lose_tail(run: Path, samples: int) -> int:
    """Remove the newest samples shards holding at least `samples` rows, as a kill before they landed
    would have; the manifest goes back to `running`. Returns the rows removed."""
    import pyarrow.parquet as pq

    from cotforge.io.rundir import RunDir

    removed = 0
    for shard in sorted((run / "samples").glob("part-*.parquet"), reverse=True):
        if removed >= samples:
            break
        removed += pq.ParquetFile(shard).metadata.num_rows
        shard.unlink()
    RunDir(run).update_manifest(status="running")
    return removed


def forget_tallies(run: Path) -> int:
    """Remove the run's tally files and mark it running, as a run written before tallies would be."""
    from cotforge.io.rundir import RunDir

    files = sorted((run / "resume").glob("tally-*.parquet"))
    for path in files:
        path.unlink()
    RunDir(run).update_manifest(status="running")
    return len(files)


def measure(workdir: Path, count: int) -> dict:
    prompts = workdir / f"prompts-{count}.jsonl"
    write_prompts(prompts, count)
    out = workdir / f"run-{count}"
    full = run_child(prompts, out)
    shards = len(list((out / "samples").glob("part-*.parquet")))
    complete = run_child(prompts, out)
    lost = lose_tail(out, LOST)
    resumed = run_child(prompts, out)
    return {"prompts": count, "full": full, "shards": shards, "complete": complete, "lost": lost,
            "resumed": resumed}


def report(r: dict) -> None:
    full, complete, resumed = r["full"], r["complete"], r["resumed"]
    print(f"{r['prompts']:>9,} prompts, {full['samples_total']:,} samples in {r['shards']:,} shards: "
          f"{full['samples_total'] / full['seconds']:,.0f} samples/s ({full['seconds']:.1f} s), "
          f"CPU {1e6 * full['cpu_s'] / full['samples_total']:.0f} us/sample (the loop "
          f"{1e6 * full['loop_cpu_s'] / full['samples_total']:.0f}, then end-of-run statistics "
          f"{full['finish_s']:.1f} s), "
          f"first request {full['first_request_s']:.2f} s, peak RSS {full['peak_rss_mb']:.0f} MB", flush=True)
    print(f"{'':>9}  resume, all committed: done in {complete['seconds']:.1f} s (peak RSS "
          f"{complete['peak_rss_mb']:.0f} MB); resume after losing {r['lost']:,} samples: first request "
          f"{resumed['first_request_s']:.2f} s, done in {resumed['seconds']:.1f} s", flush=True)


def written(workdir: Path, count: int) -> None:
    prompts = workdir / f"prompts-{count}.jsonl"
    write_prompts(prompts, count)
    out = workdir / f"run-{count}"
    start = time.perf_counter()
    shards = write_complete_run(prompts, out)
    print(f"{count:>9,} prompts: run folder of {count * K:,} samples in {shards:,} shards written in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    complete = run_child(prompts, out)
    print(f"{'':>9}  resume, all committed: done in {complete['seconds']:.1f} s (CPU {complete['cpu_s']:.1f} s, "
          f"peak RSS {complete['peak_rss_mb']:.0f} MB), of which end-of-run statistics from the tallies "
          f"{complete['finish_s']:.1f} s (CPU {complete['cpu_s'] - complete['loop_cpu_s']:.1f} s)", flush=True)
    untallied = forget_tallies(out)  # a run written before tallies: each shard tallied once, at its end
    rebuilt = run_child(prompts, out)
    print(f"{'':>9}  the same with no tallies ({untallied} files removed): done in {rebuilt['seconds']:.1f} s "
          f"(CPU {rebuilt['cpu_s']:.1f} s, peak RSS {rebuilt['peak_rss_mb']:.0f} MB), of which tallying every "
          f"shard {rebuilt['finish_s']:.1f} s (CPU {rebuilt['cpu_s'] - rebuilt['loop_cpu_s']:.1f} s)", flush=True)
    lost = lose_tail(out, LOST)
    resumed = run_child(prompts, out)
    print(f"{'':>9}  resume after losing {lost:,} samples: first request "
          f"{resumed['first_request_s']:.2f} s, done in {resumed['seconds']:.1f} s (CPU {resumed['cpu_s']:.1f} s, "
          f"peak RSS {resumed['peak_rss_mb']:.0f} MB), of which end-of-run statistics {resumed['finish_s']:.1f} s "
          f"(CPU {resumed['cpu_s'] - resumed['loop_cpu_s']:.1f} s)",
          flush=True)
    print(f"resume first request {resumed['first_request_s']:.2f} s / target 30 s: ratio "
          f"{resumed['first_request_s'] / 30:.2f}")


def first_request(prompts: Path, out: Path) -> None:
    """On a complete run folder (from `--written N --keep DIR`): lose the newest LOST samples, then
    time the resume's first request only (the child stops there, as a kill would)."""
    lost = lose_tail(out, LOST)
    os.environ[STOP_AT_FIRST] = "1"
    resumed = run_child(prompts, out)
    print(f"resume after losing {lost:,} samples: first request {resumed['first_request_s']:.2f} s "
          f"(CPU {resumed['cpu_s']:.1f} s, peak RSS {resumed['peak_rss_mb']:.0f} MB)")
    print(f"resume first request {resumed['first_request_s']:.2f} s / target 30 s: ratio "
          f"{resumed['first_request_s'] / 30:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10K and 100K prompts instead of 100K and 1M")
    parser.add_argument("--sizes", type=int, nargs="+", help="prompt counts (smallest first)")
    parser.add_argument("--written", type=int, metavar="N", help="resume figures only, on a written run")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="with --written: write the run under DIR, keep it")
    parser.add_argument("--first-request", type=Path, nargs=2, metavar=("PROMPTS", "RUN"),
                        help="on a kept complete run: time a resume's first request after losing the newest samples")
    parser.add_argument("--child", nargs=2, metavar=("PROMPTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.first_request:
        first_request(*args.first_request)
        return
    if args.written:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            written(args.keep, args.written)
            return
        with tempfile.TemporaryDirectory(prefix="cotforge-generate-scale-") as tmp:
            written(Path(tmp), args.written)
        return
    sizes = args.sizes or ((10_000, 100_000) if args.quick else (100_000, 1_000_000))
    results = []
    with tempfile.TemporaryDirectory(prefix="cotforge-generate-scale-") as tmp:
        for count in sizes:
            results.append(measure(Path(tmp), count))
            report(results[-1])
    small, large = results[0], results[-1]
    for r in results:
        print(f"driver CPU per sample, the loop, {r['prompts']:,} prompts: "
              f"{1e6 * r['full']['loop_cpu_s'] / r['full']['samples_total']:.0f} us (target 200 us: 5,000 samples/s a core)")
    ratio = large["full"]["peak_rss_mb"] / small["full"]["peak_rss_mb"]
    print(f"peak RSS {large['prompts']:,} prompts {large['full']['peak_rss_mb']:.0f} MB / {small['prompts']:,} "
          f"prompts {small['full']['peak_rss_mb']:.0f} MB: ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
