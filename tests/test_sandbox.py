"""The sandbox holds: no user files inside (root or not), verdicts it cannot forge, nothing outliving a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from conftest import cotforge_process

from cotforge.checks import create
from cotforge.checks.sandbox import clean_stale, isolation, run_python

REPO = Path(__file__).resolve().parents[1]
isolated = pytest.mark.skipif(not isolation()[0], reason=f"no sandbox isolation here: {isolation()[1]}")

PROBE_FILES = """import json, os, sys
targets = json.loads(sys.argv[1] if len(sys.argv) > 1 else {targets!r})
seen = {{}}
for path in targets["read"]:
    try:
        seen[path] = "read " + open(path).read()[:20]
    except OSError as err:
        seen[path] = f"denied {{err.errno}}"
for path in targets["write"]:
    try:
        open(path, "w").write("pwned")
        seen[path] = "wrote"
    except OSError as err:
        seen[path] = f"denied {{err.errno}}"
print(json.dumps(seen))
"""


def _probe(targets: dict, runner=run_python) -> dict:
    result = runner(PROBE_FILES.format(targets=json.dumps(targets)), time_limit_s=5)
    assert result.returncode == 0, result
    return json.loads(result.stdout)


@isolated
def test_the_users_files_are_not_there_to_read_or_write():
    # a folder anyone may read and write: only the box, not file permissions, can keep the program out
    folder = Path(tempfile.mkdtemp(prefix="cotforge-user-files-"))
    try:
        folder.chmod(0o777)
        secret = folder / "secret.txt"
        secret.write_text("user secret")
        secret.chmod(0o666)
        planted = folder / "planted.txt"
        seen = _probe({"read": [str(secret), str(REPO / "pyproject.toml"), os.path.expanduser("~/.bashrc")],
                       "write": [str(planted), str(secret), str(REPO / f"planted-{uuid.uuid4().hex}")]})
        assert all(outcome.startswith("denied") for outcome in seen.values()), seen
        assert not planted.exists() and not list(REPO.glob("planted-*"))
        assert secret.read_text() == "user secret"
    finally:
        shutil.rmtree(folder)


def _world_python() -> str | None:
    from cotforge.checks.sandbox import _world_executable

    return next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if _world_executable(p)), None)


def _as_nobody(home: Path, driver: str) -> subprocess.Popen:
    """Run `driver` (Python source importing the sandbox module copied into `home`) as uid 65534."""
    nobody = 65534
    shutil.copy(REPO / "cotforge/checks/sandbox.py", home / "sandbox.py")
    shutil.copy(REPO / "cotforge/checks/_sandbox_init.py", home / "_sandbox_init.py")
    for path in (home, *home.iterdir()):
        os.chown(path, nobody, nobody)
    home.chmod(0o755)
    return subprocess.Popen([_world_python(), "-c", driver], cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(home), "TMPDIR": str(home)},
                            user=nobody, group=nobody, extra_groups=[])


as_root_with_a_shared_python = pytest.mark.skipif(
    os.geteuid() != 0 or _world_python() is None,
    reason="needs root (to become an ordinary user) and a Python every user can run")


@as_root_with_a_shared_python
def test_as_an_ordinary_user_the_program_cannot_touch_that_users_files():
    """The non-root path (user namespace): run the sandbox module itself as uid 65534."""
    home = Path(tempfile.mkdtemp(prefix="cotforge-nobody-"))
    try:
        (home / "secret.txt").write_text("nobody's secret")
        targets = {"read": [str(home / "secret.txt")], "write": [str(home / "planted.txt")]}
        driver = ("import json, sandbox\nok, how = sandbox.isolation()\n"
                  f"result = sandbox.run_python({PROBE_FILES.format(targets=json.dumps(targets))!r})\n"
                  "print(json.dumps({'ok': ok, 'how': how, 'out': result.stdout, 'err': result.stderr}))")
        out, _ = _as_nobody(home, driver).communicate(timeout=60)
        report = json.loads(out)
        if not report["ok"]:
            pytest.skip(f"user namespaces are not permitted here: {report['how']}")
        assert "user+mount" in report["how"]
        seen = json.loads(report["out"])
        assert all(outcome.startswith("denied") for outcome in seen.values()), (seen, report)
        assert not (home / "planted.txt").exists()
    finally:
        shutil.rmtree(home)


def _judge(code: str, tests: list[str]):
    completion = f"<think>Write it.</think>\n```python\n{code}\n```"
    return create("code", time_limit_s=3).check({"completion": completion, "domain": "code",
                                                 "tests": json.dumps(tests)})


FORGERIES = {
    "reads the harness's secrets and prints them": (
        "import __main__, sys, gc\n"
        "for name in dir(__main__):\n    print(getattr(__main__, name))\n"
        "for value in list(vars(__main__).values()):\n    print(value)\n"
        "import os\nprint(os.environ)\nos._exit(0)\ndef add(a, b):\n    return 0"),
    "writes a pass into every descriptor and file it can reach": (
        "import os, glob\n"
        "for fd in range(0, 64):\n"
        "    try:\n        os.write(fd, b'{\"ok\": true}\\n')\n    except OSError:\n        pass\n"
        "for path in glob.glob('/tmp/*') + glob.glob('/proc/*/fd/*'):\n"
        "    try:\n        open(path, 'w').write('{\"ok\": true}')\n    except OSError:\n        pass\n"
        "def add(a, b):\n    return 0"),
    "returns an object equal to everything": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n"
        "    def __bool__(self):\n        return True\n"
        "def add(a, b):\n    return Anything()"),
    "looks for the test in its caller and on disk": (
        "import sys, os\n"
        "def add(a, b):\n"
        "    frame = sys._getframe()\n"
        "    while frame.f_back:\n        frame = frame.f_back\n"
        "    text = open('test.json').read() if os.path.exists('test.json') else ''\n"
        "    return int(text.split('==')[1].split('\"')[0]) if '==' in text else -1"),
    "exits 0 before the test runs": "import sys\ndef add(a, b):\n    return 0\nsys.exit(0)",
}


@isolated
@pytest.mark.parametrize("attempt", sorted(FORGERIES))
def test_a_solution_cannot_forge_a_pass(attempt):
    verdict = _judge(FORGERIES[attempt], ["assert add(1, 2) == 3", "assert add(20, 22) == 42"])
    assert not verdict.passed and verdict.score == 0.0, verdict


@isolated
def test_assert_tests_still_reach_classes_in_place_changes_and_exceptions():
    code = ("class Solution:\n    def two_sum(self, nums, target):\n"
            "        seen = {}\n        for i, n in enumerate(nums):\n"
            "            if target - n in seen:\n                return [seen[target - n], i]\n"
            "            seen[n] = i\n"
            "def sort_in_place(items):\n    items.sort()\n"
            "def positive(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
            "LIMIT = 10 ** 9 + 7\n")
    tests = ["assert Solution().two_sum([2, 7, 11, 15], 9) == [0, 1]",
             "items = [3, 1, 2]\nsort_in_place(items)\nassert items == [1, 2, 3]",
             "try:\n    positive(-1)\n    assert False\nexcept ValueError:\n    pass",
             "assert LIMIT % 2 == 1 and isinstance(positive(2.5), float)"]
    verdict = _judge(code, tests)
    assert verdict.passed and verdict.score == 1.0, verdict


SLEEPER = """import os, subprocess, time
subprocess.Popen(["sleep", "{mark}1"], start_new_session=True)
if os.fork() == 0:  # double fork + setsid: a daemon that no process group kill reaches
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "{mark}2"])
    os._exit(0)
os.execv("/bin/sleep", ["sleep", "{mark}3"])  # the program itself, under a name the test can find
"""


def _processes_with(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def _holding(folder: Path) -> list[int]:
    """Processes with a file open under `folder` (a sandbox run's lock is held through one)."""
    prefix, found = str(folder.resolve()) + os.sep, []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and any(os.readlink(fd).startswith(prefix) for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            pass
    return found


def _stat(pid: int) -> list[int]:
    """[0, ppid, pgrp, session] of a process; zeros when it is gone."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return [0, 0, 0, 0]
    return [0, *map(int, fields[1:4])]


def _wait_for(predicate, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


def _start_filter(tmp_path: Path, mark: str) -> tuple[subprocess.Popen, Path]:
    completion = f"<think>Sum them.</think>\n```python\n{SLEEPER.format(mark=mark)}\n```"
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"id": "s1", "prompt": "Add.", "completion": completion, "domain": "code",
                                   "tests": json.dumps([{"input": "1 2", "output": "3"}])}) + "\n")
    preset = tmp_path / "sandbox.yaml"
    preset.write_text("checks:\n  - check: code\n    time_limit_s: 60\n    timeout_s: 120\n")
    # A short TMPDIR: multiprocessing's forkserver binds an AF_UNIX socket under it, and a path over 107
    # bytes fails (xdist's tmp_path for this test's name is longer than that)
    scratch = Path(tempfile.mkdtemp(prefix="cf-sbx-"))
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(REPO)}
    process = cotforge_process("filter", samples, "--out", tmp_path / "run", "--checks", preset, "--overwrite",
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return process, scratch


@pytest.mark.process
@isolated
@pytest.mark.parametrize("victim", ["whole process group", "check workers only"])
def test_killing_cotforge_leaves_no_sandboxed_program_running(tmp_path, victim):
    mark = f"{100 + uuid.uuid4().int % 800}.{uuid.uuid4().int % 10**6:06d}"
    process, scratch = _start_filter(tmp_path, mark)
    try:
        sleepers = _wait_for(lambda: len(_processes_with(mark)) >= 3 and _processes_with(mark), 90)
        assert len(sleepers) >= 3, "the sandboxed program never started"
        if victim == "whole process group":
            os.killpg(process.pid, signal.SIGKILL)
        else:  # what the OOM killer does: the workers that run the checks, not the main process
            # this filter's workers: parents of sandbox launchers, in the session the filter leads (other
            # cotforge runs may share the machine)
            workers = {_stat(pid)[1] for pid in _processes_with("_sandbox_init.py")}
            workers = {pid for pid in workers if _stat(pid)[3] == process.pid}
            assert workers and process.pid not in workers
            for worker in workers:
                os.kill(worker, signal.SIGKILL)
        survivors = _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in sleepers), 10)
        assert survivors, f"still running after the kill: {[p for p in sleepers if Path(f'/proc/{p}').exists()]}"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    assert _wait_for(lambda: not _processes_with(mark), 10), _processes_with(mark)
    # A SIGKILLed worker still holds its run's lock until its exit is done, and a worker the filter
    # started to retry the sample may have taken a folder and died before its program started (no mark
    # to wait for): wait until nobody holds a file there, or clean_stale rightly keeps that folder.
    assert _wait_for(lambda: not _holding(scratch), 10), _holding(scratch)
    stale = list(scratch.glob("cotforge-sandbox-*"))
    assert stale, "a killed run leaves its folder behind (which the next start must remove)"
    assert clean_stale(str(scratch)) == len(stale) and not list(scratch.glob("cotforge-sandbox-*"))


@as_root_with_a_shared_python
def test_as_an_ordinary_user_a_killed_caller_leaves_nothing_running():
    mark = f"{100 + uuid.uuid4().int % 800}.{uuid.uuid4().int % 10**6:06d}"
    home = Path(tempfile.mkdtemp(prefix="cotforge-nobody-"))
    try:
        driver = ("import sandbox, sys\nif not sandbox.isolation()[0]:\n    sys.exit(3)\n"
                  f"sandbox.run_python({SLEEPER.format(mark=mark)!r}, time_limit_s=60)")
        caller = _as_nobody(home, driver)
        sleepers = _wait_for(lambda: len(_processes_with(mark)) >= 3 and _processes_with(mark), 30)
        if caller.poll() == 3:
            pytest.skip("user namespaces are not permitted here")
        assert sleepers and len(sleepers) >= 3, caller.communicate(timeout=5)
        os.killpg(caller.pid, signal.SIGKILL)
        caller.wait()
        assert _wait_for(lambda: not _processes_with(mark), 10), _processes_with(mark)
        assert clean_stale(str(home)) == 1 and not list(home.glob("cotforge-sandbox-*"))
    finally:
        for pid in _processes_with(mark):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home)


@isolated
def test_a_new_run_removes_stale_folders_but_not_live_ones(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    stale = scratch / "cotforge-sandbox-dead"
    (stale / "box").mkdir(parents=True)
    (stale / "lock").write_text("")  # its owner is gone, so nobody holds the lock
    old_layout = scratch / "cotforge-sandbox-oldlayout"
    old_layout.mkdir()
    os.utime(old_layout, (time.time() - 3600, time.time() - 3600))
    starting = scratch / "cotforge-sandbox-starting"  # just created, lock not yet taken
    starting.mkdir()
    code = ("import sys; sys.path.insert(0, sys.argv[1])\nfrom cotforge.checks.sandbox import run_python\n"
            "print(run_python('print(6 * 7)').stdout.strip())")
    done = subprocess.run([sys.executable, "-c", code, str(REPO)], check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.stdout.strip() == "42", done.stderr
    assert not stale.exists() and not old_layout.exists() and starting.exists()


def test_where_namespaces_are_refused_isolation_says_why_and_what_to_do(monkeypatch):
    # Stand-in: this machine permits the namespaces, so the launcher's refusal is simulated.
    from cotforge.checks import sandbox

    refused = sandbox.RunResult(125, "", "sandbox: unshare: Operation not permitted\n", 0.01, False)
    monkeypatch.setattr(sandbox, "_launch", lambda *args, **kwargs: refused)
    sandbox.isolation.cache_clear()
    try:
        ok, how = sandbox.isolation()
        assert not ok and "unshare: Operation not permitted" in how and "unprivileged_userns_clone=1" in how
        with pytest.raises(RuntimeError, match="require_isolation: false"):
            sandbox.run_python("print(1)")
    finally:
        sandbox.isolation.cache_clear()
