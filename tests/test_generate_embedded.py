"""The embedded engine through `cotforge generate` for real: SIGKILL mid-run, then the same command resumes."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import cotforge, cotforge_process, digest

from cotforge.query import run_query

pytestmark = pytest.mark.model  # generates with the real embedded model


def test_sigkill_then_resume_keeps_committed_samples(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is {i} + {i}?", "gold": str(2 * i)}) + "\n"
                               for i in range(4)))
    out = tmp_path / "run"
    command = ["generate", prompts, "--out", out, "--k", "2", "--max-rounds", "1", "--max-tokens", "12",
               "--shard-size", "2", "--engine-option", "batch_size=2", "--checks", "format", "--jobs", "0"]
    process = cotforge_process(*command)
    deadline = time.monotonic() + 300
    while not list((out / "samples").glob("part-*.parquet")) and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"generate ended early: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    process.wait()
    shards = {p.name: digest(p) for p in (out / "samples").glob("part-*.parquet")}
    assert 1 <= len(shards) < 4, "the kill should land mid-run"
    _, before = run_query(out, "SELECT id, completion FROM samples")

    finished = cotforge(*command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    for name, value in shards.items():
        assert digest(out / "samples" / name) == value, f"committed shard {name} changed"
    _, after = run_query(out, "SELECT id, completion FROM samples")
    assert set(before) <= set(after)
    ids = [row[0] for row in after]
    assert sorted(ids) == sorted(f"q{i}-{j}" for i in range(4) for j in range(2))  # no duplicates, no losses
    _, meta = run_query(out, "SELECT DISTINCT engine, model, temperature, top_p FROM samples")
    assert meta == [("embedded", meta[0][1], 0.6, 0.95)] and "SmolLM2" in meta[0][1]
