"""Unverified is not accepted: three verdict states, the chain's `verified` stage, ambiguous gold columns."""

from __future__ import annotations

import json

import pytest
from conftest import write_jsonl

from cotforge.checks import create
from cotforge.checks.base import Verdict
from cotforge.checks.chain import VERIFIED, Chain, CheckSpec
from cotforge.errors import CotforgeError
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import RawRow

MATH = "<think>2 + 2 = 4</think>\nThe answer is 4."
CODE = "<think>Add them.</think>\n```python\ndef add(a, b):\n    return a + b\n```"


def test_verdicts_have_three_states():
    assert Verdict.ok("fine").status == "passed"
    assert Verdict.fail("answer 3 != gold 4").status == "failed"
    skipped = Verdict.skip("no gold", missing="gold")
    assert skipped.status == "n/a" and skipped.passed and skipped.score is None and skipped.missing == "gold"
    assert create("answer").check({"completion": MATH}).missing == "gold"
    assert create("code").check({"completion": CODE, "domain": "code"}).missing == "tests"
    assert create("code").check({"completion": CODE, "domain": "code", "tests": "[not json"}).missing == "tests"


def test_library_chains_have_no_verification_stage():
    chain = Chain([CheckSpec("format"), CheckSpec("answer")], jobs=0)
    assert chain.names == ["format", "answer"]
    assert chain.run([{"completion": MATH}])[0].accepted  # rewards: n/a stays a None score, nothing more


def test_data_chain_rejects_a_sample_no_verifier_could_judge():
    chain = Chain([CheckSpec("format"), CheckSpec("answer"), CheckSpec("code")], jobs=0, allow_unverified=False)
    assert chain.names == ["format", "answer", "code", VERIFIED]
    no_gold, with_gold, code_no_tests = chain.run([
        {"completion": MATH}, {"completion": MATH, "gold": "4"}, {"completion": CODE, "domain": "code"}])
    assert not no_gold.accepted
    assert no_gold.verdicts[-1].status == "failed" and "unverified: no gold" in no_gold.verdicts[-1].reason
    assert with_gold.accepted and with_gold.verdicts[-1].reason == "judged by answer"
    assert not code_no_tests.accepted and "unverified: no tests" in code_no_tests.verdicts[-1].reason
    # a wrong answer is verified (and rejected by `answer`, not by this stage)
    wrong = chain.run([{"completion": MATH, "gold": "5"}])[0]
    assert wrong.verdicts[1].status == "failed" and wrong.verdicts[-1].passed


def test_a_chain_without_verifying_checks_does_not_ask_for_verification():
    chain = Chain([CheckSpec("format")], jobs=0, allow_unverified=False)
    assert chain.names == ["format"] and chain.run([{"completion": MATH}])[0].accepted


def test_filter_rejects_unverified_and_the_summary_names_the_missing_column(cli, tmp_path):
    samples = write_jsonl(tmp_path / "samples.jsonl", [
        {"id": "a", "question": "2+2?", "completion": MATH},
        {"id": "b", "question": "2+2?", "completion": MATH, "expected": "4"},  # a column no alias reads
        {"id": "c", "question": "2+2?", "completion": MATH, "answer": "4"},
        {"id": "d", "question": "add", "completion": CODE, "domain": "code", "tests": "assert add(1, 2) == ("},
    ])
    run = tmp_path / "run"
    result = cli("filter", samples, "--out", run, "--checks", "format,answer,code", "--jobs", "1", check=True)
    assert "rows read 4: accepted 1, rejected 3, quarantined 0" in result.stdout, result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("unverified"))
    assert line.startswith("unverified 3 (rejected 3): 2 with no gold (no gold/answer/solution/ground_truth"), line
    assert "--field gold=COLUMN" in line and "1 with no tests" in line
    assert "verified" in result.stdout.split("unverified")[-1]  # the funnel has the stage
    rows = json.loads(cli("query", run, 'SELECT id, status, reason FROM verdicts WHERE "check" = \'answer\' '
                                        "ORDER BY id", "--format", "json", check=True).stdout)
    assert [r["status"] for r in rows] == ["n/a", "n/a", "passed", "n/a"]
    # with its gold column named, the sample is verified
    named = write_jsonl(tmp_path / "named.jsonl", [{"id": "b", "question": "2+2?", "completion": MATH, "expected": "4"}])
    fixed = cli("filter", named, "--out", tmp_path / "run2", "--checks", "format,answer,code", "--jobs", "1",
                "--field", "gold=expected", check=True)
    assert "accepted 1, rejected 0" in fixed.stdout and "unverified" not in fixed.stdout


def test_preset_may_allow_unverified(cli, tmp_path):
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"id": "a", "prompt": "2+2?", "completion": MATH}])
    preset = tmp_path / "open.yaml"
    preset.write_text("allow_unverified: true\nchecks:\n  - check: format\n  - check: answer\n")
    result = cli("filter", samples, "--out", tmp_path / "run", "--checks", preset, "--jobs", "1", check=True)
    assert "accepted 1, rejected 0" in result.stdout
    assert "unverified 1 (rejected 0, accepted 1 as allow_unverified says): 1 with no gold" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("allow_unverifed: true\nchecks: [format]\n")
    result = cli("filter", samples, "--out", tmp_path / "run2", "--checks", bad)
    assert result.returncode != 0 and "unknown preset key(s) allow_unverifed" in result.stderr
    assert "Traceback" not in result.stderr


def test_two_gold_columns_are_an_error_asking_for_field(cli, tmp_path):
    samples = write_jsonl(tmp_path / "samples.jsonl", [
        {"id": "a", "prompt": "2+2?", "completion": MATH, "answer": "4", "ground_truth": "5"}])
    result = cli("filter", samples, "--out", tmp_path / "run", "--checks", "format,answer", "--jobs", "1")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert f"{samples}:1:" in message and "'answer' and 'ground_truth'" in message
    assert "--field gold=COLUMN" in message
    ok = cli("filter", samples, "--out", tmp_path / "run2", "--checks", "format,answer", "--jobs", "1",
             "--field", "gold=ground_truth", check=True)
    assert "accepted 0, rejected 1" in ok.stdout  # graded against ground_truth (5), not answer (4)


def test_a_column_named_gold_is_never_ambiguous():
    normalize = Normalizer("sample")
    row = normalize(RawRow("f.jsonl", 1, {"prompt": "p", "completion": MATH, "gold": "4", "answer": "4"}))
    assert row["gold"] == "4"
    with pytest.raises(CotforgeError, match="--field gold=COLUMN"):
        normalize(RawRow("f.jsonl", 2, {"prompt": "p", "completion": MATH, "solution": "4", "answer": "4"}))


def test_old_run_folders_read_the_same(cli, tmp_path):
    """Verdicts now store their status and code; a run folder written before they existed (verdicts
    of check, passed, score, reason only) reads with the same statuses, and null codes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    samples = write_jsonl(tmp_path / "samples.jsonl", [{"id": "a", "prompt": "2+2?", "completion": MATH}])
    run = tmp_path / "run"
    cli("filter", samples, "--out", run, "--checks", "format,answer", "--jobs", "1", check=True)
    query = 'SELECT "check", status, code FROM verdicts ORDER BY "check"'
    now = json.loads(cli("query", run, query, "--format", "json", check=True).stdout)
    assert now == [{"check": "answer", "status": "n/a", "code": "missing:gold"},
                   {"check": "format", "status": "passed", "code": None},
                   {"check": "verified", "status": "failed", "code": "missing:gold"}]
    shard = next((run / "samples").glob("part-*.parquet"))
    table = pq.read_table(shard)
    assert [f.name for f in table.schema.field("verdicts").type.value_type] == \
        ["check", "passed", "score", "reason", "status", "code"]
    old_type = pa.list_(pa.struct([(name, table.schema.field("verdicts").type.value_type.field(name).type)
                                   for name in ("check", "passed", "score", "reason")]))
    old = [[{k: v[k] for k in ("check", "passed", "score", "reason")} for v in row]
           for row in table.column("verdicts").to_pylist()]
    table = table.set_column(table.schema.get_field_index("verdicts"), "verdicts", pa.array(old, old_type))
    pq.write_table(table, shard)
    before = json.loads(cli("query", run, query, "--format", "json", check=True).stdout)
    assert before == [{**row, "code": None} for row in now]
