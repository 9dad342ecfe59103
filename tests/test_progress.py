"""The progress line after a resume (issue 23, item 9): one basis for every count (all sessions), and the
rate of this session only (work read back from committed shards is not work done per second)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import threading

import pytest
from conftest import cotforge, cotforge_process
from servers import ScriptedServer
from test_partial_sources import solver, sum_prompts, wait_for

from cotforge.filtering import filter_samples
from cotforge.io.rundir import RunDir
from cotforge.progress import Progress

LINE = re.compile(r"^(?P<label>\w+): (?P<done>\d+)(?:/(?P<total>\d+))? \w+ \((?P<rate>[0-9.e+]+)/s\)(?P<info>.*)$")


def parsed(line: str) -> dict:
    found = LINE.match(line)
    assert found, line
    fields = dict(re.findall(r"(\w+) (\S+)", found.group("info")))
    return {"done": int(found.group("done")), "rate": float(found.group("rate")), **fields}


def test_resumed_items_count_towards_the_total_but_not_the_rate():
    stream, now = io.StringIO(), [100.0]
    with Progress("generate", total=10_000, unit="prompts", every_s=0, stream=stream, clock=lambda: now[0]) as progress:
        progress.resumed(9_000, accepted=9_000)  # read back from committed shards in a moment
        now[0] += 2.0
        progress.advance(1, accepted=9_001)
        now[0] += 2.0
        progress.advance(3, accepted=9_004)
    first, second = stream.getvalue().splitlines()  # read-back work prints nothing on its own
    assert parsed(first) == {"done": 9_001, "rate": 0.5, "accepted": "9001"}  # 1 prompt in 2 s, not 9,001
    assert parsed(second) == {"done": 9_004, "rate": 1.0, "accepted": "9004"}


def test_a_resumed_filter_counts_rows_and_accepted_on_one_basis(tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": "q", "completion": f"<think>{i}</think> {i}"})
                            + "\n" for i in range(900)))
    filter_samples([data], tmp_path / "run", checks="format", jobs=0, chunk_rows=300)
    run = RunDir(tmp_path / "run")
    run.shards("samples")[-1].unlink()  # what a kill before the last commit leaves: two of three shards
    run.update_manifest(status="running")
    capsys.readouterr()
    filter_samples([data], tmp_path / "run", checks="format", jobs=0, chunk_rows=300)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("filter: ")]
    assert lines, "no progress line"
    values = parsed(lines[0])
    assert values["done"] == 900 and values["accepted"] == "900"  # rows and accepted: both every session's


@pytest.mark.slow
def test_the_progress_line_after_a_killed_generate_resumes(tmp_path):
    prompts = sum_prompts(tmp_path / "p.jsonl", 40)
    command = ["generate", prompts, "--out", tmp_path / "run", "--engine", "openai", "--model", "m", "--k", "1",
               "--max-rounds", "1", "--checks", "answer", "--jobs", "0", "--shard-size", "1", "--concurrency", "2"]
    gate = threading.Event()
    with ScriptedServer([solver(gate, answered_freely=6)]) as server:
        first = cotforge_process(*command, "--base-url", server.base_url)
        wait_for(lambda: len(list((tmp_path / "run" / "samples").glob("part-*.parquet"))) >= 4, "4 shards")
        first.send_signal(signal.SIGKILL)
        first.wait()
        gate.set()
        committed = RunDir(tmp_path / "run").count_rows("samples")
        resumed = cotforge(*command, "--base-url", server.base_url, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                           timeout=300, check=True)
    lines = [line for line in resumed.stderr.splitlines() if line.startswith("generate: ")]
    assert lines, resumed.stderr
    values = parsed(lines[0])  # the first line: printed when this session finished its first prompt
    assert values["done"] >= committed + 1
    # every answer is right and k=1: a prompt done is one sample, accepted; counted on one basis
    assert int(values["samples"]) == int(values["accepted"]) == values["done"], lines[0]
    assert values["rate"] < 1_000, lines[0]  # this session's prompts per second, not the resumed ones
