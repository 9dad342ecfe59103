"""Run folders: atomic shards, resume after SIGKILL, config-change refusal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from conftest import digest
from held_check import DRIVER, held_chain

from cotforge.io import RunConfigMismatch, RunDir
from cotforge.query import run_query
from cotforge.schema import SAMPLE_SCHEMA, to_table


def sample_rows(n, start=0):
    return [{"id": f"s{i}", "prompt_id": f"p{i // 2}", "sample_idx": i % 2, "completion": f"<think>{i}</think> {i}",
             "accepted": i % 3 != 0, "verdicts": [{"check": "format", "passed": i % 3 != 0, "score": 1.0,
                                                    "reason": "ok" if i % 3 else "empty"}]}
            for i in range(start, start + n)]


def test_config_change_is_refused_unless_overwrite(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"prompt": "x"}\n')
    run = RunDir.open(tmp_path / "run", "filter", {"checks": ["format"]}, [data])
    run.write_shard("samples", 0, to_table(sample_rows(3), SAMPLE_SCHEMA))
    RunDir.open(tmp_path / "run", "filter", {"checks": ["format"]}, [data])  # same config resumes
    assert run.count_rows("samples") == 3
    with pytest.raises(RunConfigMismatch, match=r"checks \['format'\] -> \['answer'\].*--overwrite"):
        RunDir.open(tmp_path / "run", "filter", {"checks": ["answer"]}, [data])
    data.write_text('{"prompt": "y"}\n')
    with pytest.raises(RunConfigMismatch, match="input files changed"):
        RunDir.open(tmp_path / "run", "filter", {"checks": ["format"]}, [data])
    RunDir.open(tmp_path / "run", "filter", {"checks": ["answer"]}, [data], overwrite=True)
    assert run.count_rows("samples") == 0


KILLED_WRITER = """
import os, signal, sys
from cotforge.io import RunDir
from cotforge.schema import SAMPLE_SCHEMA, to_table
run = RunDir(sys.argv[1])
rows = [{"id": "late", "prompt_id": "p", "sample_idx": 0, "completion": "x", "accepted": True, "verdicts": []}]
real_replace = os.replace
def die(src, dst):  # killed after the temp file is written and fsynced, before the rename
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = die
run.write_shard("samples", 1, to_table(rows, SAMPLE_SCHEMA))
"""


def test_writer_killed_before_rename_leaves_nothing_visible(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("{}\n")
    run = RunDir.open(tmp_path / "run", "filter", {}, [data])
    run.write_shard("samples", 0, to_table(sample_rows(4), SAMPLE_SCHEMA))
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(run.path)], check=False)
    assert result.returncode == -signal.SIGKILL
    leftovers = list((run.path / "samples").glob(".*.tmp"))
    assert leftovers, "the killed writer should have left its temp file behind"
    _, rows = run_query(run.path, "SELECT count(*), count(*) FILTER (WHERE id = 'late') FROM samples")
    assert rows == [(4, 0)]
    RunDir.open(run.path, "filter", {}, [data])  # reopening cleans the temp file
    assert not list((run.path / "samples").glob(".*.tmp"))


@pytest.mark.process
def test_filter_killed_mid_run_resumes_without_duplicates_or_losses(tmp_path):
    data = tmp_path / "samples.jsonl"
    n = 2000
    with open(data, "w") as handle:
        for i in range(n):
            completion = f"<think>step {i}</think> answer {i}" if i % 4 else f"<think>cut {i}"
            if i == 1250:  # held (tests/held_check.py) until the kill: the kill lands mid-run, whatever the load
                completion = f"<think>step {i}</think> HOLD {i}"
            handle.write(json.dumps({"id": f"r{i}", "prompt": f"q{i % 97}", "completion": completion}) + "\n")
    out, marker = tmp_path / "run", tmp_path / "held.pid"
    command = [sys.executable, "-c", DRIVER, "filter", str(data), "--out", str(out), "--checks",
               str(held_chain(tmp_path / "checks.yaml", marker, "format")), "--jobs", "1", "--chunk-rows", "100"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while (not marker.exists() or len(list((out / "samples").glob("part-*.parquet"))) < 3) \
            and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the events waited on: three committed shards and the held row's marker
    assert process.poll() is None, process.communicate()
    process.kill()
    process.wait()
    committed = {p.name: digest(p) for p in (out / "samples").glob("part-*.parquet")}
    assert 3 <= len(committed) < n // 100, "kill should land mid-run"
    subprocess.run(command, check=True, capture_output=True)
    for name, before in committed.items():
        assert digest(out / "samples" / name) == before, f"committed shard {name} was rewritten"
    _, rows = run_query(out, "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE accepted) FROM samples")
    assert rows == [(n, n, n - n // 4)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["rows_read"] == n


def test_table_of_exact_schema():
    table = to_table(sample_rows(2), SAMPLE_SCHEMA)
    assert table.schema.equals(SAMPLE_SCHEMA)
    assert table.column("verdicts").type == pa.list_(SAMPLE_SCHEMA.field("verdicts").type.value_type)
