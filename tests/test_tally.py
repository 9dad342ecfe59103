"""A generate run's end-of-run statistics from per-shard tallies (cotforge/tally.py) equal DuckDB's
scan of every shard (stats.run_counts, accounting.token_accounting): on varied run folders, on real
runs with accepted, rejected, cancelled, refused and early-stopped samples, after a kill and a resume,
after shards were lost and rewritten at their index, and for a run written before tallies existed.
The engine is a stand-in that holds requests until polled (no model: these are about the driver).
"""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cotforge import tally
from cotforge.checks.base import MISSING, NOT_MATH, VERIFIED, WORKER_DIED
from cotforge.engines.base import CANCELLED, REPETITION, Completion, Engine, Finished
from cotforge.generate import GenerateConfig
from cotforge.generate.accounting import CANCELLED_SCHEMA, CANCELLED_TABLE, accounting_of, token_accounting
from cotforge.generate.scheduler import Scheduler
from cotforge.io.rundir import RunDir
from cotforge.schema import QUARANTINE_SCHEMA, SAMPLE_SCHEMA, to_table
from cotforge.stats import counts_of, run_counts

CHECKS = ["format", "answer", VERIFIED]


def scanned(path, order=CHECKS) -> tuple[dict, dict]:
    """The reference: DuckDB over every shard."""
    return run_counts(path, order), token_accounting(RunDir(path), order)


def from_tallies(path, order=CHECKS) -> tuple[dict, dict]:
    totals, groups, cancelled = tally.TallyIndex(RunDir(path)).totals()
    return counts_of(totals, order), accounting_of(groups, cancelled, order)


# -- varied run folders, written directly ------------------------------------------------------------
REASONS = ["truncated: finish_reason is 'length'", "no reasoning block", "answer 17 != gold 18",
           "answer 3 != gold 4", None]
OLD_VERDICT = pa.struct([("check", pa.string()), ("passed", pa.bool_()), ("score", pa.float64()),
                         ("reason", pa.string())])  # verdicts before status and code were stored


def verdict(rng, check, passed, code=None):
    return {"check": check, "passed": passed, "score": rng.choice([None, 0.0, 1.0]) if passed else 0.0,
            "reason": rng.choice(REASONS), "status": rng.choice(["passed", "n/a"]) if passed else "failed",
            "code": code}


def varied_rows(rng, count, start=0):
    rows = []
    for i in range(start, start + count):
        verdicts = [verdict(rng, "format", rng.random() < 0.7)]
        if rng.random() < 0.8:
            verdicts.append(verdict(rng, "answer", rng.random() < 0.5,
                                    code=rng.choice([None, None, WORKER_DIED, "timeout"])))
        if rng.random() < 0.5:  # the verification stage: missing fields, a gold in words, or verified
            code = rng.choice([MISSING + "gold", MISSING + "gold,tests", NOT_MATH, None])
            verdicts.append({**verdict(rng, VERIFIED, rng.random() < 0.3, code),
                             "status": rng.choice(["n/a", "failed", "passed"])})
        if rng.random() < 0.05:
            verdicts = rng.choice([[], None])
        accepted = bool(verdicts) and all(v["passed"] for v in verdicts) if rng.random() < 0.9 else \
            rng.choice([True, False])  # a verdict the checks allowed (allow_unverified) or a review
        rows.append({"id": f"s{i}", "prompt_id": f"p{i // 4}", "sample_idx": i % 4, "round": 0,
                     "accepted": accepted, "verdicts": verdicts,
                     "completion_tokens": rng.choice([None, 0, 7, 300, 8191]),
                     "finish_reason": rng.choice(["stop", "length", REPETITION, "stopped:answer",
                                                  "stopped:language", None])})
    return rows


def write_varied_run(path, seed) -> RunDir:
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"command": "generate", "status": "complete"}))
    run = RunDir(path)
    rng = random.Random(seed)
    shard = 0
    for shard in range(rng.randint(3, 7)):
        run.write_shard("samples", shard, to_table(varied_rows(rng, rng.randint(1, 60), shard * 100), SAMPLE_SCHEMA))
    old = [{"id": f"old{i}", "accepted": i % 2 == 0, "completion_tokens": i, "finish_reason": "stop",
            "verdicts": [{"check": "format", "passed": i % 2 == 0, "score": None if i % 3 else 1.0, "reason": "r"},
                         {"check": VERIFIED, "passed": i % 4 == 0, "score": None, "reason": "u"}]}
           for i in range(9)]
    old_schema = pa.schema([("id", pa.string()), ("accepted", pa.bool_()), ("completion_tokens", pa.int64()),
                            ("finish_reason", pa.string()), ("verdicts", pa.list_(OLD_VERDICT))])
    run.write_shard("samples", shard + 1, pa.Table.from_pylist(old, old_schema))
    for index in range(rng.randint(0, 3)):
        run.write_shard("quarantine", index, to_table(
            [{"file": "in.jsonl", "line": j, "field": "prompt", "reason": "engine: too long", "raw": "{}"}
             for j in range(rng.randint(1, 5))], QUARANTINE_SCHEMA))
    for index in range(rng.randint(0, 3)):
        run.write_shard(CANCELLED_TABLE, index, pa.Table.from_pylist(
            [{"prompt_id": "p0", "sample_idx": j, "round": 0, "seed": j, "completion_tokens": rng.choice([None, 5, 40])}
             for j in range(rng.randint(1, 4))], CANCELLED_SCHEMA))
    return run


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_tallies_sum_to_the_scan_of_every_shard(tmp_path, monkeypatch, seed):
    run = write_varied_run(tmp_path / "run", seed)
    want = scanned(run.path)
    assert want[0]["rejected"] and want[0]["rejected_worker_died"] and want[0]["unverified"]  # the cases are there
    assert from_tallies(run.path) == want  # a run with no tally files (written before them): tallied from its shards
    assert sorted((run.path / "resume").glob("tally-*.parquet"))  # ... and flushed, so that happens once

    def reread(*args):
        raise AssertionError("a shard with a valid tally was read again")

    with monkeypatch.context() as patched:
        patched.setattr(tally, "tally_of", reread)
        assert from_tallies(run.path) == want

    # A shard rewritten at its index (lost in a kill, generated again) voids its old tally.
    rng = random.Random(seed + 100)
    run.write_shard("samples", 1, to_table(varied_rows(rng, 37, 5000), SAMPLE_SCHEMA))
    assert from_tallies(run.path) == scanned(run.path) != want
    # A removed shard's tally no longer counts; a damaged tally file is ignored.
    run.shard_path("samples", 0).unlink()
    sorted((run.path / "resume").glob("tally-*.parquet"))[0].write_bytes(b"not parquet")
    assert from_tallies(run.path) == scanned(run.path)


def test_the_top_rejection_is_the_same_under_ties(tmp_path):
    """Two checks with as many failures, two reasons as common: both ways pick by name."""
    path = tmp_path / "run"
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"command": "generate", "status": "complete"}))
    run = RunDir(path)
    fail = lambda check, reason: {"check": check, "passed": False, "score": 0.0, "reason": reason,  # noqa: E731
                                  "status": "failed", "code": None}
    rows = [{"id": f"s{i}", "accepted": False, "verdicts": [fail(check, reason)]}
            for i, (check, reason) in enumerate([("zeta", "b"), ("zeta", "a"), ("alpha", "y"), ("alpha", "x"),
                                                 ("alpha", None), ("zeta", None)])]
    for shard in range(2):
        run.write_shard("samples", shard, to_table(rows[shard::2], SAMPLE_SCHEMA))
    counts, _ = scanned(path, None)
    assert counts["top_rejection"] == {"check": "alpha", "rows": 3, "reason": "x"}
    assert from_tallies(path, None) == scanned(path, None)


# -- real runs ---------------------------------------------------------------------------------------
class HoldingEngine(Engine):
    """Holds what it is sent and finishes one request per poll, so siblings are still in flight when
    their prompt reaches accept (and get cancelled). Samples vary by seed: closed or not, stopped by
    length or by its loop detection; prompts in `refuse` come back with an error (quarantined)."""

    name = model = "holding"
    max_inflight = 6

    def __init__(self, refuse=(), die_after=None):
        self.held, self.done, self.refuse, self.die_after, self.polls = [], [], set(refuse), die_after, 0

    @property
    def inflight(self):
        return len(self.held) + len(self.done)

    def submit(self, request, params):
        self.held.append(request)

    def cancel(self, requests):
        ids = {id(r) for r in requests}
        for request in [r for r in self.held if id(r) in ids]:
            self.held.remove(request)
            self.done.append(Finished(request, [Completion("<think>cut", CANCELLED, 5, 3)] * request.n))

    def poll(self, timeout_s=0.0):
        self.polls += 1
        if self.die_after is not None and self.polls > self.die_after:
            raise KeyboardInterrupt("killed")  # the process dies here: nothing after it runs
        if self.held:
            request = self.held.pop(0)
            if request.key in self.refuse:
                self.done.append(Finished(request, error="prompt longer than the context"))
            else:
                completions = []
                for j in range(request.n):
                    seed = request.seed + j
                    finish = [REPETITION, "length", "stop", "stop", "stop"][seed % 5]
                    text = f"<think>{request.key} {seed}" + ("" if seed % 7 == 0 else f"</think> \\boxed{{{seed % 3}}}")
                    completions.append(Completion(text, finish, 9, 10 + seed % 50))
                self.done.append(Finished(request, completions))
        done, self.done = self.done, []
        return done


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "prompts.jsonl"
    rows = []
    for i in range(24):
        row = {"id": f"p{i:03d}", "prompt": f"What is {i} mod 3?"}
        if i % 5:  # some with no gold (unverified), some with a gold in words
            row["gold"] = "Paris" if i % 7 == 0 else str(i % 3)
        rows.append(row)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def config():
    return GenerateConfig(engine="holding", k=4, accept=1, max_rounds=2, adaptive=False, checks="format,answer",
                          jobs=0, shard_size=4, shard_age_s=3600)


def generate(prompts, out, **engine):
    scheduler = Scheduler(prompts, out, config(), engine=HoldingEngine(refuse={"p004", "p011"}, **engine))
    try:
        return scheduler.run_all()
    finally:
        scheduler.close()


def assert_summary_is_the_scan(summary, out):
    counts, tokens = scanned(out, summary["funnel"] and [s["stage"] for s in summary["funnel"][2:]])
    assert summary["funnel"] == counts["funnel"] and summary["tokens"] == tokens
    assert {k: summary[k] for k in ("rows_read", "accepted", "rejected", "quarantined", "completion_tokens")} == \
        {k: counts[k] for k in ("rows_read", "accepted", "rejected", "quarantined", "completion_tokens")}
    assert summary["cancelled"] == tokens["cancelled"]["samples"]


def test_a_run_ends_with_its_tallies_equal_to_the_scan(prompts, tmp_path, monkeypatch):
    monkeypatch.setattr(tally, "FLUSH_EVERY", 3)
    out = tmp_path / "run"
    summary = generate(prompts, out)
    counts, tokens = scanned(out, ["format", "answer", VERIFIED])
    # every kind of sample is there
    assert counts["accepted"] and counts["rejected"] and counts["quarantined"] == 2 and counts["unverified"]
    assert tokens["cancelled"]["samples"] and tokens["stopped_early"].get(REPETITION)
    assert_summary_is_the_scan(summary, out)
    files = sorted((out / "resume").glob("tally-samples-*.parquet"))
    assert len(files) >= len(list((out / "samples").glob("part-*.parquet"))) // 3 >= 4


@pytest.mark.parametrize("lose", [0, 3])
def test_after_a_kill_and_a_resume_the_tallies_equal_the_scan(prompts, tmp_path, monkeypatch, lose):
    """Killed mid-run (its unflushed tallies lost with it), `lose` newest shards gone as if they never
    landed (a tally file may name them: their indices are written again, with other samples), then the
    same command: the end's figures are the scan's."""
    monkeypatch.setattr(tally, "FLUSH_EVERY", 3)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        generate(prompts, out, die_after=40)
    shards = sorted((out / "samples").glob("part-*.parquet"))
    assert len(shards) > 6 and sorted((out / "resume").glob("tally-samples-*.parquet"))
    for shard in shards[len(shards) - lose:]:
        shard.unlink()
    summary = generate(prompts, out)
    assert_summary_is_the_scan(summary, out)
    assert summary["samples"] == pq.ParquetDataset(out / "samples").read(columns=["id"]).num_rows
