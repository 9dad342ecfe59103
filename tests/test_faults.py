"""Faults from outside: killed check workers, signals, a full or read-only disk, leftovers of a kill."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, write_jsonl
from held_check import DRIVER, held_chain

from cotforge.checks.base import Check, Verdict, register
from cotforge.checks.chain import Chain, CheckSpec


@register
class _SlowCheck(Check):
    """Test-only check: takes a little while per sample, so a worker can be killed mid-check."""

    name = "test_slow"
    timeout_s = 30.0

    def check(self, sample: dict) -> Verdict:
        time.sleep(0.05)
        return Verdict.ok()


def test_worker_killed_from_outside_is_retried_not_judged():
    samples = [{"completion": f"<think>{i}</think> {i}"} for i in range(80)]
    killed = []

    def kill_a_worker(chain: Chain) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = [w for w in chain._workers if w.status[2] > 0 and w.process.pid]
            if busy:
                os.kill(busy[0].process.pid, signal.SIGKILL)  # what the OOM killer does
                killed.append(int(busy[0].status[0]))
                return
            time.sleep(0.01)

    with Chain([CheckSpec("test_slow")], jobs=2) as chain:
        chain.start()
        killer = threading.Thread(target=kill_a_worker, args=(chain,))
        killer.start()
        results = chain.run(samples)
        killer.join()
    assert killed, "no worker was caught mid-check"
    assert all(r.accepted for r in results), [r.verdicts for r in results if not r.accepted]
    assert chain.infrastructure() == {"worker_deaths": 1, "retried": 1, "died_twice": 0}


def samples_file(path, n):
    return write_jsonl(path, ({"id": f"r{i}", "prompt": f"q{i}", "completion": f"<think>step {i}</think> {i}"}
                              for i in range(n)))


ROWS = 600  # HOLD is row 250: shards 0 and 1 (rows 0-199) can commit, the run cannot finish


def held_filter_command(tmp_path):
    """A real `cotforge filter` with a worker pool whose check holds row 250 until that worker is killed
    (tests/held_check.py); a rerun of the same command passes it at once (the marker exists)."""
    rows = [{"id": f"r{i}", "prompt": f"q{i}", "completion": f"<think>step {i}</think> {'HOLD' if i == 250 else i}"}
            for i in range(ROWS)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    marker = tmp_path / "held.pid"
    checks = held_chain(tmp_path / "checks.yaml", marker, "format", "language")
    run = tmp_path / "run"
    command = [sys.executable, "-c", DRIVER, "filter", str(data), "--out", str(run), "--checks", str(checks),
               "--jobs", "2", "--chunk-rows", "100"]
    return data, run, marker, command


def interrupted_filter(tmp_path, signum: int, whole_group: bool):
    """The held filter, stopped by `signum` once two shards are committed and a worker holds row 250: the
    run is known to be mid-way (no race with its end, whatever the machine's load)."""
    data, run, marker, command = held_filter_command(tmp_path)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while (not marker.exists() or len(list((run / "samples").glob("part-*.parquet"))) < 2) \
            and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the events waited on: the held row's marker and two committed shards
    assert marker.exists() and process.poll() is None, process.communicate()
    if whole_group:
        os.killpg(process.pid, signum)  # what Ctrl-C in a terminal does
    else:
        os.kill(process.pid, signum)
    out, err = process.communicate(timeout=60)
    return data, run, command, process.returncode, out, err


@pytest.mark.process
@pytest.mark.parametrize(("signum", "whole_group"), [(signal.SIGINT, True), (signal.SIGTERM, False),
                                                     (signal.SIGTERM, True)])
def test_signal_stops_quietly_and_the_rerun_resumes(tmp_path, cli, signum, whole_group):
    _, run, command, returncode, _, err = interrupted_filter(tmp_path, signum, whole_group)
    assert returncode == 128 + signum
    lines = [line for line in err.splitlines() if not line.startswith("filter: ")]  # progress lines
    assert lines == ["cotforge: interrupted; rerun the same command to resume"], err
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    resumed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
    assert f"rows read {ROWS}: accepted {ROWS}" in resumed.stdout
    assert "stale lock" not in resumed.stderr, "an interrupted writer releases its lock"


@pytest.mark.process
def test_unfinished_run_is_refused_by_export_and_mix_unless_allow_partial(tmp_path, cli):
    _, run, _, returncode, _, _ = interrupted_filter(tmp_path, signal.SIGINT, True)
    assert returncode == 130
    committed = int(cli("query", run, "SELECT count(*) FROM samples", "--format", "csv", check=True)
                    .stdout.splitlines()[1])
    assert 0 < committed < ROWS

    refused = cli("export", run, "--out", tmp_path / "ds")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"{run}: unfinished filter run (status running); rerun its command to finish "
                                      f"it, or pass --allow-partial to export the {committed} rows committed so far")
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").iterdir())
    partial = cli("export", run, "--out", tmp_path / "ds", "--allow-partial", check=True)
    assert f"exported {committed} rows" in partial.stdout
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "**Partial data.** Exported from the unfinished filter run `run` (status running)" in card

    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"name: m\nseed: 1\nsources:\n  - name: r\n    path: {run}\n")
    refused = cli("mix", recipe, "--out", tmp_path / "mixed")
    assert refused.returncode == 1 and "unfinished filter run" in refused.stderr
    assert "--allow-partial to mix" in refused.stderr
    mixed = cli("mix", recipe, "--out", tmp_path / "mixed", "--allow-partial", check=True)
    assert f"kept {committed} of {committed} rows" in mixed.stdout
    cli("export", tmp_path / "mixed", "--out", tmp_path / "ds2", check=True)
    card = (tmp_path / "ds2" / "README.md").read_text()
    assert "Mix source `r` was an unfinished run taken with --allow-partial (status running" in card

    queried = cli("query", run, "SELECT 1", check=True)
    assert "unfinished run (status running)" in queried.stderr


def test_folder_holding_only_temp_files_is_a_fresh_run(tmp_path, cli):
    data = samples_file(tmp_path / "in.jsonl", 10)
    run = tmp_path / "run"
    killed_during_first_manifest = (
        "import os, signal, sys\n"
        "from cotforge.io import RunDir\n"
        "real_replace = os.replace\n"
        "def die(src, dst):\n"
        "    if str(dst).endswith('manifest.json'): os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real_replace(src, dst)\n"
        "os.replace = die\n"
        f"RunDir.open({str(run)!r}, 'filter', {{}}, [{str(data)!r}])\n")
    result = subprocess.run([sys.executable, "-c", killed_during_first_manifest], cwd=REPO, check=False)
    assert result.returncode == -signal.SIGKILL
    left = sorted(p.name for p in run.iterdir())
    assert len(left) == 2 and left[0] == ".cotforge.lock" and left[1].startswith(".manifest.json."), left
    assert not (run / "manifest.json").exists()
    result = cli("filter", data, "--out", run, "--checks", "format", check=True)
    assert "rows read 10: accepted 10" in result.stdout
    assert "rows" in cli("query", run, "SELECT count(*) AS rows FROM samples", check=True).stdout


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs, so writes fail with ENOSPC; needs root (mount), skipped otherwise."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()}); needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_one_line_naming_the_path(cli, tmp_path, small_disk):
    (small_disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 8192))  # leave less than the probe needs
    data = samples_file(tmp_path / "in.jsonl", 50)
    result = cli("filter", data, "--out", small_disk / "run", "--checks", "format")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    probe = small_disk / "run" / ".cotforge-write-probe.tmp"
    assert result.stderr.strip().splitlines() == [
        (f"{probe}: cannot write: No space left on device; free space on that disk (or choose another folder), "
         "then rerun the same command to resume")]
    (small_disk / "filler").unlink()  # space freed: the same command now runs
    assert "rows read 50" in cli("filter", data, "--out", small_disk / "run", "--checks", "format", check=True).stdout


def test_disk_full_mid_run_is_one_line(cli, tmp_path, small_disk):
    data = tmp_path / "in.jsonl"  # ~3 MiB of samples: the shards cannot fit in 1 MiB
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": os.urandom(300).hex(),
                                        "completion": "<think>x</think> " + os.urandom(300).hex()}) + "\n"
                            for i in range(2500)))
    result = cli("filter", data, "--out", small_disk / "run", "--checks", "format", "--chunk-rows", "500")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{small_disk / 'run'}") and "No space left on device; free space" in line


def test_read_only_folder_is_one_line(cli, tmp_path, small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    data = samples_file(tmp_path / "in.jsonl", 5)
    for command in (["filter", data, "--out", small_disk / "run", "--checks", "format"],
                    ["export", tmp_path / "nothing", "--out", small_disk / "ds"]):
        if command[0] == "export":
            cli("filter", data, "--out", tmp_path / "nothing", "--checks", "format", check=True)
            command[1] = tmp_path / "nothing"
        result = cli(*command)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Read-only file system" in lines[0] and str(small_disk) in lines[0], lines


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (read from /proc), children first."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found



@pytest.mark.process
def test_cli_filter_survives_a_worker_killed_mid_item_and_counts_it_apart(tmp_path):
    _, run, marker, command = held_filter_command(tmp_path)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the marker appears when a worker holds the HOLD row: the event waited on
    assert marker.exists(), process.communicate()
    held = int(marker.read_text())
    assert held in descendants(process.pid), "the held item's worker is one of the command's processes"
    os.kill(held, signal.SIGKILL)  # what the OOM killer does, to a worker known to hold an item
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert f"rows read {ROWS}: accepted {ROWS}, rejected 0" in out, out
    # the held item went back to a fresh worker (which found the marker and passed it): one retry
    assert re.search(r"infrastructure: 1 check worker deaths this session, 1 items retried on a fresh "
                     r"worker; 0 rows rejected", out), out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["infrastructure"] == {"worker_deaths": 1, "retried": 1, "died_twice": 0}


@pytest.mark.process
def test_sigkill_of_the_whole_group_resumes_exactly(tmp_path):
    _, run, command, returncode, _, _ = interrupted_filter(tmp_path, signal.SIGKILL, True)
    assert returncode == -signal.SIGKILL
    resumed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
    assert "taking over a stale lock (filter pid" in resumed.stderr and "no longer running" in resumed.stderr
    assert f"rows read {ROWS}: accepted {ROWS}, rejected 0" in resumed.stdout
    from cotforge.query import run_query

    _, rows = run_query(run, "SELECT count(*), count(DISTINCT id) FROM samples")
    assert rows == [(ROWS, ROWS)]


def fill(disk: Path) -> None:
    """Write until the disk is full to the last byte (ENOSPC)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("command", ["generate", "filter"])
def test_a_disk_full_before_the_first_write_names_the_path(cli, tmp_path, small_disk, command):
    fill(small_disk)
    data = samples_file(tmp_path / "in.jsonl", 3)
    extra = (["--engine", "openai", "--base-url", "http://127.0.0.1:9", "--model", "m"] if command == "generate"
             else [])
    result = cli(command, data, "--out", small_disk / "run", "--checks", "format", *extra)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{small_disk / 'run'}/"), lines  # the path, never "?"
    assert ": cannot write: No space left on device; free space on that disk" in lines[0]
    (small_disk / "filler").unlink()  # space freed: the same folder takes a run
    assert "rows read 3" in cli("filter", data, "--out", small_disk / "run", "--checks", "format", "--overwrite",
                                check=True).stdout
