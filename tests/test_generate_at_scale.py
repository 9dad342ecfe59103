"""What keeps the generate driver flat at a million prompts (benchmarks/generate_scale.py measures it):
prompt rows read from the run's prompts shard when started, state only for prompts being worked on,
and a resume that reads the key index instead of every shard. Each must leave the samples exactly
those of one uninterrupted run. The engine answers at once (no model: these are about the driver).
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from cotforge.engines.base import Completion, Engine, Finished
from cotforge.generate import GenerateConfig
from cotforge.generate import prompts as prompt_module
from cotforge.generate import resume
from cotforge.generate.scheduler import Scheduler
from cotforge.errors import CotforgeError
from runcheck import assert_same_up_to_cancellation

PROMPTS = 60


class InstantEngine(Engine):
    """Answers at once; a third of the samples (by seed) never close </think>, so `format` rejects them
    and their prompts ask follow-up waves."""

    name = model = "instant"
    max_inflight = 8

    def __init__(self):
        self.done, self._inflight, self.asked = [], 0, []

    @property
    def inflight(self):
        return self._inflight

    def submit(self, request, params):
        self.asked.append((request.key, request.first_index, request.n))
        self._inflight += request.n
        texts = [f"<think>{request.key} {request.seed + j}" + ("" if (request.seed + j) % 3 == 0 else "</think> 4")
                 for j in range(request.n)]
        self.done.append(Finished(request, [Completion(t, "stop", 5, 5) for t in texts]))

    def cancel(self, requests):
        pass  # answered at once: nothing is ever running to cancel

    def poll(self, timeout_s=0.0):
        done, self.done = self.done, []
        self._inflight -= sum(f.request.n for f in done)
        return done


def config(**extra) -> GenerateConfig:
    # Fixed waves of k and an engine that answers at once: every run asks the very same samples (the
    # adaptive policy sizes waves from the run-wide prior, which depends on timing).
    return GenerateConfig(engine="instant", k=2, accept=2, max_rounds=3, adaptive=False, checks="format", jobs=0,
                          shard_size=5, shard_age_s=3600, **extra)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i:03d}", "prompt": f"What is {i} + 1?", "gold": str(i + 1)}) + "\n"
                            for i in range(PROMPTS)))
    return path


def samples(run) -> dict:
    rows = {}
    for shard in sorted((run / "samples").glob("part-*.parquet")):
        for row in pq.read_table(shard, columns=["id", "seed", "round", "completion", "accepted"]).to_pylist():
            assert row["id"] not in rows, f"{row['id']} committed twice"
            rows[row["id"]] = row
    return rows


def run(prompts, out, **extra):
    scheduler = Scheduler(prompts, out, config(**extra), engine=InstantEngine())
    try:
        return scheduler, scheduler.run_all()
    finally:
        scheduler.close()


@pytest.fixture(scope="module")
def uninterrupted(prompts, tmp_path_factory):
    whole = tmp_path_factory.mktemp("whole") / "run"
    _, summary = run(prompts, whole)
    rows = samples(whole)
    assert summary["samples"] == len(rows) > 2 * PROMPTS  # follow-up waves were asked
    return rows, summary, whole


def test_the_driver_holds_only_the_prompts_it_works_on(prompts, tmp_path, monkeypatch, uninterrupted):
    monkeypatch.setattr(prompt_module, "BATCH", 7)  # read the prompts shard 7 rows at a time
    held = []
    original = Scheduler._start

    def start(self, prompt_id, row):
        original(self, prompt_id, row)
        held.append((len(self.prompts), len(self.state)))

    monkeypatch.setattr(Scheduler, "_start", start)
    scheduler, summary = run(prompts, tmp_path / "run")
    # In flight (max_inflight 8 = 4 waves of 2), being judged, or waiting for a slot: a few dozen at
    # most, however many prompts the input has (all of them were held before).
    assert max(rows for rows, _ in held) <= 24 and max(states for _, states in held) <= 24
    assert scheduler.prompts == {} and scheduler.state == {}  # every prompt done and forgotten
    assert samples(tmp_path / "run") == uninterrupted[0]
    assert (summary["prompts"], summary["prompts_done"]) == (PROMPTS, uninterrupted[1]["prompts_done"])


@pytest.mark.parametrize("damage", ["corrupt index", "no index"])
def test_resume_reads_the_key_index_and_resumes_exactly(prompts, tmp_path, monkeypatch, uninterrupted, damage):
    monkeypatch.setattr(resume, "INDEX_EVERY", 3)
    out = tmp_path / "run"
    run(prompts, out)
    index = sorted((out / "resume").glob("keys-*.parquet"))
    shards = sorted((out / "samples").glob("part-*.parquet"))
    assert len(index) == len(shards) // 3 >= 4  # one index file per 3 shards
    # A kill before the last shards landed: they and the index over them are gone.
    lost = shards[-4:]
    lost_ids = {(r["prompt_id"], r["sample_idx"]) for shard in lost
                for r in pq.read_table(shard, columns=["prompt_id", "sample_idx"]).to_pylist()}
    for shard in lost:
        shard.unlink()
    # The last index file covers a shard removed above: it must be ignored.
    assert int(index[-1].stem.split("-")[2]) >= int(lost[0].stem.split("-")[1])
    if damage == "corrupt index":  # the others are read, its shards are read one by one
        index[1].write_bytes(b"not parquet")
    elif damage == "no index":  # a run written before the index existed
        for path in index:
            path.unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))

    scheduler = Scheduler(prompts, out, config(), engine=InstantEngine())
    engine = scheduler._engine
    try:
        summary = scheduler.run_all()
    finally:
        scheduler.close()
    # Issue 18's guarantee (tests/runcheck.py): the same samples, but for siblings of a prompt whose
    # committed samples already reached accept (the lost shard held one: it is not asked again).
    assert_same_up_to_cancellation(out, uninterrupted[2], accept=2)
    asked = {(key, first + j) for key, first, n in engine.asked for j in range(n)}
    assert asked and asked <= lost_ids  # nothing committed is asked again
    assert summary["prompts_done"] == uninterrupted[1]["prompts_done"]


def test_a_complete_run_rerun_asks_nothing(prompts, tmp_path, uninterrupted):
    run(prompts, tmp_path / "run")
    scheduler = Scheduler(prompts, tmp_path / "run", config(), engine=InstantEngine())
    engine = scheduler._engine
    try:
        summary = scheduler.run_all()
    finally:
        scheduler.close()
    assert engine.asked == [] and summary["samples"] == len(samples(tmp_path / "run"))
    assert summary["prompts_done"] == uninterrupted[1]["prompts_done"]


SESSION = ("seconds_this_session", "tokens_per_s_this_session")


def test_a_complete_run_rerun_reuses_its_figures(prompts, tmp_path, monkeypatch):
    """Nothing new committed: the manifest's counts, funnel and tokens are the run's, not recomputed
    over every shard (minutes at 1M prompts); they equal what a recompute gives."""
    _, first = run(prompts, tmp_path / "run")
    import cotforge.stats
    import cotforge.tally

    def no_recompute(*args, **kwargs):
        raise AssertionError("end-of-run statistics recomputed for a run that did not change")

    with monkeypatch.context() as patched:
        patched.setattr(cotforge.stats, "run_counts", no_recompute)
        patched.setattr(cotforge.tally.TallyIndex, "totals", no_recompute)
        _, again = run(prompts, tmp_path / "run")
    assert {k: v for k, v in again.items() if k not in SESSION} == {k: v for k, v in first.items() if k not in SESSION}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["samples"] == first["samples"]


@pytest.mark.parametrize("change", ["lost shard", "manifest says fewer samples"])
def test_a_rerun_recomputes_when_the_run_is_not_what_its_manifest_says(prompts, tmp_path, change, uninterrupted):
    _, first = run(prompts, tmp_path / "run")
    manifest_path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if change == "lost shard":  # killed before the last shard landed: back to running, that shard asked again
        sorted((tmp_path / "run" / "samples").glob("part-*.parquet"))[-1].unlink()
        manifest["status"] = "running"
    else:  # a manifest out of line with the shards (written by hand, or by another version)
        manifest["counts"]["samples"] -= 1
        manifest["counts"]["accepted"] -= 1
    manifest_path.write_text(json.dumps(manifest))
    _, again = run(prompts, tmp_path / "run")
    assert again["samples"] == first["samples"] == len(samples(tmp_path / "run"))
    assert again["accepted"] == first["accepted"] and again["funnel"] == first["funnel"]
    assert again["tokens"] == first["tokens"] if change != "lost shard" else again["tokens"]["accepted"] == \
        first["tokens"]["accepted"]


@pytest.mark.parametrize("rows", [
    [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"}],
    [{"id": "a", "prompt": "x"}] + [{"id": f"n{i}", "prompt": "y"} for i in range(20)] + [{"id": "a", "prompt": "q"}],
])
def test_duplicate_prompt_ids_are_one_line_and_no_prompts_shard(tmp_path, monkeypatch, rows):
    monkeypatch.setattr(prompt_module, "BATCH", 4)  # the duplicate lands in another batch than the first
    path = tmp_path / "dup.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(CotforgeError, match=r"dup.jsonl: prompt id 'a' appears twice; ids must be unique"):
        Scheduler(path, tmp_path / "run", config(), engine=InstantEngine())
    assert not list((tmp_path / "run").glob("prompts/*.parquet"))


def test_bad_rows_quarantined_before_the_prompts_shard(tmp_path, monkeypatch):
    monkeypatch.setattr(prompt_module, "BATCH", 2)
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "b"}\nnot json\n{"id": "c", "prompt": "y"}\n')
    scheduler = Scheduler(path, tmp_path / "run", config(), engine=InstantEngine(), bad_rows="quarantine")
    scheduler.close()
    quarantine = pq.read_table(tmp_path / "run" / "quarantine" / "part-000000.parquet").to_pylist()
    assert sorted(r["line"] for r in quarantine) == [2, 3]
    assert pq.read_table(tmp_path / "run" / "prompts" / "part-000000.parquet").column("id").to_pylist() == ["a", "c"]


def test_token_accounting_groups_as_a_row_by_row_count_would(tmp_path):
    """The accounting is one DuckDB aggregate; each row is charged as the row loop it replaced charged
    it: accepted; else to its first failed check ('unknown' with no failed verdict), and also under
    `stopped_early` by why it stopped; cancelled samples from their own table; null tokens count 0."""
    import random

    import pyarrow as pa

    from cotforge.engines.base import REPETITION
    from cotforge.generate.accounting import CANCELLED_SCHEMA, CANCELLED_TABLE, stop_reason, token_accounting
    from cotforge.io.rundir import RunDir
    from cotforge.schema import SAMPLE_SCHEMA, to_table

    (tmp_path / "manifest.json").write_text(json.dumps({"command": "generate", "status": "complete"}))
    run = RunDir(tmp_path)
    rng = random.Random(7)
    verdict = lambda check, passed: {"check": check, "passed": passed, "score": None, "reason": "r",  # noqa: E731
                                     "status": "passed" if passed else "failed", "code": None}
    rows = []
    for i in range(300):
        verdicts = rng.choice([[verdict("format", True), verdict("answer", True)],
                               [verdict("format", False), verdict("answer", False)],
                               [verdict("format", True), verdict("answer", False)], [], None])
        accepted = bool(verdicts) and all(v["passed"] for v in verdicts)
        rows.append({"id": f"s{i}", "prompt_id": f"p{i // 4}", "sample_idx": i % 4, "accepted": accepted,
                     "verdicts": verdicts, "completion_tokens": rng.choice([None, 0, 7, 300]),
                     "finish_reason": rng.choice(["stop", "length", REPETITION, "stopped:answer", None])})
    for shard in range(3):
        run.write_shard("samples", shard, to_table(rows[shard * 100:(shard + 1) * 100], SAMPLE_SCHEMA))
    cancelled = [{"prompt_id": "p0", "sample_idx": j, "round": 0, "seed": j, "completion_tokens": t}
                 for j, t in enumerate([5, None, 11])]
    run.write_shard(CANCELLED_TABLE, 0, pa.Table.from_pylist(cancelled, CANCELLED_SCHEMA))

    want = {"accepted": {"samples": 0, "tokens": 0}, "rejected": {}, "stopped_early": {}}
    for row in rows:  # the row loop, as the reference
        tokens = row["completion_tokens"] or 0
        if row["accepted"]:
            want["accepted"]["samples"] += 1
            want["accepted"]["tokens"] += tokens
            continue
        check = next((v["check"] for v in row["verdicts"] or [] if not v["passed"]), "unknown")
        for table, key in (("rejected", check), ("stopped_early", stop_reason(row["finish_reason"]))):
            if key is not None:
                bucket = want[table].setdefault(key, {"samples": 0, "tokens": 0})
                bucket["samples"] += 1
                bucket["tokens"] += tokens
    got = token_accounting(run, ["format", "answer"])
    assert got["accepted"] == want["accepted"] and got["stopped_early"] == want["stopped_early"]
    assert got["rejected"] == want["rejected"] and list(got["rejected"])[:2] == ["format", "answer"]
    assert got["cancelled"] == {"samples": 3, "tokens": 16}
    assert got["total"] == want["accepted"]["tokens"] + sum(b["tokens"] for b in want["rejected"].values()) + 16
