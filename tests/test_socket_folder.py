"""The check pool under a long TMPDIR (a CI's or pytest's tmp_path): the fork server's AF_UNIX socket
goes under a short folder instead of dying at start (Linux caps the socket path at 107 bytes)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

JUDGE_ONE = textwrap.dedent("""
    import tempfile
    from cotforge.checks.chain import Chain, CheckSpec
    sample = {"id": "s", "prompt": "1+1?", "completion": "<think>add</think> The answer is \\\\boxed{2}.", "gold": "2"}
    with Chain([CheckSpec("answer", {})], jobs=1) as chain:
        [result] = chain.run([sample])
    print(tempfile.gettempdir(), result.verdicts[0].status)
""")


def run_under(tmpdir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", JUDGE_ONE], env=env, capture_output=True, text=True, timeout=120)


def test_a_tmpdir_too_long_for_a_unix_socket_still_runs_the_pool(tmp_path):
    long = tmp_path / ("d" * 60) / ("e" * 40)  # well past the 75 bytes a socket folder can have
    long.mkdir(parents=True)
    done = run_under(long)
    assert done.returncode == 0, done.stderr
    tmpdir, status = done.stdout.split()
    assert tmpdir == str(long)  # the user's TMPDIR stays what it was for everything else
    assert status == "passed"


def test_a_short_tmpdir_is_used_as_it_is(tmp_path):
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="cf-"))
    done = run_under(short)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(short), "passed"]
