"""One writer per run folder: a second writer is refused in one line, a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, write_jsonl
from held_check import DRIVER, held_chain

from cotforge.io.lock import LOCK_NAME
from cotforge.query import run_query

HOLDER = """
import sys, time
from cotforge.io import RunDir
from cotforge.io.lock import FolderLock
if sys.argv[1] == "run":
    RunDir.open(sys.argv[2], "filter", {}, [sys.argv[3]])
else:
    FolderLock.acquire(sys.argv[2], "export")
print("locked", flush=True)
time.sleep(120)
"""


def hold(kind: str, *paths) -> subprocess.Popen:
    """A real second process holding the lock until killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, kind, *map(str, paths)], stdout=subprocess.PIPE,
                               text=True, cwd=REPO)
    assert process.stdout.readline().strip() == "locked"
    return process


def samples(path, n):
    path.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"q{i}", "completion": f"<think>{i}</think> {i}"})
                            + "\n" for i in range(n)))
    return path


def test_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(cli, tmp_path):
    data = samples(tmp_path / "in.jsonl", 20)
    run = tmp_path / "run"
    holder = hold("run", run, data)
    try:
        result = cli("filter", data, "--out", run, "--checks", "format", "--overwrite")
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"{run}: in use by another cotforge writer (filter pid {holder.pid} on host" in lines[0]
        assert not (run / "samples").exists(), "the refused writer must not touch the folder"
    finally:
        holder.kill()
        holder.wait()
    assert (run / LOCK_NAME).exists(), "a SIGKILLed holder leaves its lock record behind"
    result = cli("filter", data, "--out", run, "--checks", "format", "--overwrite", check=True)
    assert f"taking over a stale lock (filter pid {holder.pid} on this host is no longer running)" in result.stderr
    assert "rows read 20: accepted 20" in result.stdout
    assert not (run / LOCK_NAME).exists(), "a finished writer removes its lock file"


@pytest.mark.process
def test_two_real_filter_writers_one_is_refused(cli, tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"q{i}", "completion": f"<think>step {i}</think> {'HOLD' if i == 250 else i}"}
            for i in range(600)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    run, marker = tmp_path / "run", tmp_path / "held.pid"
    # The first writer holds row 250 in a check worker (tests/held_check.py) until the test kills that
    # worker: it is known to be mid-run when the second writer comes, whatever the machine's load.
    command = [sys.executable, "-c", DRIVER, "filter", str(data), "--out", str(run), "--checks",
               str(held_chain(tmp_path / "checks.yaml", marker, "format")), "--jobs", "1", "--chunk-rows", "100"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 120
    while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the event waited on: a worker of the first writer holds row 250
    assert marker.exists(), first.communicate()
    second = cli("filter", data, "--out", run, "--checks", "format,language", "--overwrite")
    still_running = first.poll() is None
    os.kill(int(marker.read_text()), signal.SIGKILL)  # the held row goes to a fresh worker, which passes it
    _, err = first.communicate(timeout=300)
    assert still_running, "the first writer finished before the second started"
    assert second.returncode == 1 and "in use by another cotforge writer" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, err
    _, rows = run_query(run, 'SELECT count(*), count(DISTINCT id), list(DISTINCT "check" ORDER BY "check") '
                             'FROM verdicts')
    assert rows == [(1200, 600, ["format", "test_hold"])], "only the first writer's verdicts are in the folder"


def test_export_folder_is_locked(cli, tmp_path):
    data = samples(tmp_path / "in.jsonl", 5)
    run = tmp_path / "run"
    cli("filter", data, "--out", run, "--checks", "format", check=True)
    dataset = tmp_path / "dataset"
    holder = hold("folder", dataset)
    try:
        result = cli("export", run, "--out", dataset)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            line for line in result.stderr.strip().splitlines() if "in use by another cotforge writer" in line]
        assert f"export pid {holder.pid}" in result.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    result = cli("export", run, "--out", dataset, check=True)
    assert "exported 5 rows" in result.stdout
