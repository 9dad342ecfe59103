"""The filter command end to end: accounting, bad-row modes, query views and formats, the chain pool."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

from cotforge.checks.base import Check, Verdict, register
from cotforge.checks.chain import Chain, CheckSpec

GOOD = {"id": "g1", "prompt": "2+2?", "completion": "<think>2+2=4</think> The answer is 4."}
CUT = {"id": "c1", "prompt": "2+2?", "completion": "<think>2+2 is", "finish_reason": "length"}


@pytest.fixture
def mixed_input(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(b"\n".join([
        json.dumps(GOOD).encode(),
        b'{"id": "broken", "prompt": ',
        json.dumps(CUT).encode(),
        b'{"id": "bytes", "prompt": "x", "completion": "\xfe"}',
        b'{"id": "nocomp", "prompt": "x"}',
    ]) + b"\n")
    return path


def test_fail_mode_stops_with_one_line(cli, mixed_input, tmp_path):
    result = cli("filter", mixed_input, "--out", tmp_path / "run", "--checks", "format")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"{mixed_input}:2: field '<row>': invalid JSON: Expecting value at column 28")
    assert "Traceback" not in result.stderr


def test_quarantine_accounts_for_every_row(cli, mixed_input, tmp_path):
    run = tmp_path / "run"
    result = cli("filter", mixed_input, "--out", run, "--checks", "format", "--bad-rows", "quarantine", check=True)
    assert "rows read 5: accepted 1, rejected 1, quarantined 3" in result.stdout
    rows = json.loads(cli("query", run, "SELECT file, line, field, reason, raw FROM quarantine ORDER BY line",
                          "--format", "json", check=True).stdout)
    assert [(r["line"], r["field"]) for r in rows] == [(2, "<row>"), (4, "completion"), (5, "completion")]
    assert rows[1]["raw"].endswith('"\\xfe"}') and "invalid UTF-8" in rows[1]["reason"]
    verdicts = json.loads(cli("query", run, "SELECT id, reason FROM verdicts WHERE NOT passed", "--format", "json",
                              check=True).stdout)
    assert verdicts == [{"id": "c1", "reason": "truncated: finish_reason is 'length'"}]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["counts"] == {"rows_read": 5, "accepted": 1, "rejected": 1, "quarantined": 3}
    assert manifest["funnel"][2] == {"stage": "format", "rejected": 1, "rejected_total": 1, "remaining": 1}


def test_query_formats(cli, mixed_input, tmp_path):
    run = tmp_path / "run"
    cli("filter", mixed_input, "--out", run, "--checks", "format", "--bad-rows", "quarantine", check=True)
    sql = "SELECT id, accepted FROM samples ORDER BY id"
    as_csv = cli("query", run, sql, "--format", "csv", check=True).stdout
    assert list(csv.reader(io.StringIO(as_csv))) == [["id", "accepted"], ["c1", "False"], ["g1", "True"]]
    as_jsonl = cli("query", run, sql, "--format", "jsonl", check=True).stdout.splitlines()
    assert [json.loads(line) for line in as_jsonl] == [{"id": "c1", "accepted": False}, {"id": "g1", "accepted": True}]
    table = cli("query", run, "SELECT id FROM accepted", check=True).stdout
    assert "g1" in table and "c1" not in table and "(1 rows)" in table
    assert json.loads(cli("query", run, "SELECT count(*) AS n FROM rejected", "--format", "json").stdout) == [{"n": 1}]
    bad = cli("query", run, "SELECT nope FROM samples")
    assert bad.returncode == 1 and "query failed" in bad.stderr
    assert cli("query", tmp_path, "SELECT 1").returncode == 1


def test_cli_lists_stages_and_its_version(cli):
    help_text = cli("--help", check=True).stdout
    for stage in ("generate", "filter", "mix", "export", "query", "train"):
        assert stage in help_text
    assert cli("--version", check=True).stdout.startswith("cotforge ")


@register
class _SleepyCheck(Check):
    """Test-only check: sleeps when the completion asks it to, or dies."""

    name = "test_sleepy"
    timeout_s = 1.0

    def check(self, sample: dict) -> Verdict:
        if "SLEEP" in sample["completion"]:
            time.sleep(60)
        if "DIE" in sample["completion"]:
            import os

            os._exit(3)
        return Verdict.ok()


def test_pool_kills_overrunning_worker_and_replaces_dead_ones():
    samples = [{"completion": c} for c in ["a", "SLEEP", "b", "DIE", "c", "d"]]
    start = time.monotonic()
    with Chain([CheckSpec("format"), CheckSpec("test_sleepy")], jobs=2) as chain:
        results = chain.run(samples)
    elapsed = time.monotonic() - start
    assert elapsed < 15, f"a hung item must cost about its limit, took {elapsed:.1f}s"
    reasons = [r.verdicts[1].reason for r in results]
    assert reasons[1] == "timeout: over 1s" and not results[1].verdicts[1].passed
    assert reasons[3].startswith("worker died (exit code 3)")
    assert all(reasons[i] == "ok" for i in (0, 2, 4, 5))
    # the killed item's other checks were recomputed in the replacement worker
    assert results[1].verdicts[0].reason.startswith("no reasoning block")
