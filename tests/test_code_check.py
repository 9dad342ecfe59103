"""`code`: solutions run against stdin/stdout and assert tests in a sandbox that holds."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from cotforge.checks import create
from cotforge.checks.sandbox import isolation, run_python

STDIO_TESTS = json.dumps([{"input": "3 4\n", "output": "7\n"}, {"input": "10 -2", "output": "8"}])
ASSERT_TESTS = json.dumps(["assert add(1, 2) == 3", "assert add(-5, 5) == 0"])

isolated = pytest.mark.skipif(not isolation()[0], reason=f"no sandbox isolation here: {isolation()[1]}")


def completion(code: str, where: str = "summary") -> str:
    block = f"```python\n{code}\n```"
    if where == "summary":
        return f"<think>Read both numbers and combine them.</think>\nHere is the solution:\n{block}"
    return f"<think>I will write it.\n{block}\n</think>\nThe code above solves it."


def judge(code: str, tests: str, domain: str = "code", where: str = "summary", **options):
    return create("code", time_limit_s=2, **options).check(
        {"completion": completion(code, where), "domain": domain, "tests": tests})


@isolated
def test_stdio_passing_and_failing_solutions():
    good = judge("a, b = map(int, input().split())\nprint(a + b)", STDIO_TESTS)
    assert good.passed and good.score == 1.0 and "2/2 stdio" in good.reason, good
    bad = judge("a, b = map(int, input().split())\nprint(a * b)", STDIO_TESTS)
    assert not bad.passed and bad.score == 0.0 and "expected '7', got '12'" in bad.reason, bad


@isolated
def test_assert_passing_partial_and_string_style():
    assert judge("def add(a, b):\n    return a + b", ASSERT_TESTS).passed
    half = judge("def add(a, b):\n    return a + b if a > 0 else 99", ASSERT_TESTS)
    assert not half.passed and half.score == 0.5 and "AssertionError" in half.reason, half
    string_tests = json.dumps("import math\nassert add(2, 2) == 4\nassert add(math.floor(1.5), 1) == 2\n")
    verdict = judge("def add(a, b):\n    return a + b", string_tests, where="reasoning")
    assert verdict.passed and "2/2 assert" in verdict.reason, verdict


@isolated
def test_solution_that_exits_early_does_not_pass_asserts():
    verdict = judge("import os\ndef add(a, b):\n    return 0\nos._exit(0)", ASSERT_TESTS)
    assert not verdict.passed and "did not run to its end" in verdict.reason


def test_non_code_domain_or_no_tests_is_skipped():
    assert judge("print(1)", STDIO_TESTS, domain="math").score is None
    verdict = create("code").check({"completion": completion("print(1)"), "domain": "code", "tests": None})
    assert verdict.passed and verdict.score is None


@isolated
def test_network_is_unreachable_even_on_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('connected')\nexcept OSError as err:\n    print('refused', err.errno)")
    result = run_python(code, time_limit_s=5)
    server.close()
    assert result.stdout.startswith("refused"), result
    assert not accepted


@isolated
def test_fork_bomb_is_contained_and_fast():
    started = time.monotonic()
    result = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                        time_limit_s=1)
    assert time.monotonic() - started < 10
    assert result.returncode != 0 or result.timed_out
    # The namespace's processes are killed before run_python returns; the kernel reaps them a little
    # later (0.2 s was not always enough on a loaded machine). Wait for that, bounded.
    deadline = time.monotonic() + 5
    while (leftovers := [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_sandbox_python(p)]) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leftovers


def _is_sandbox_python(proc: Path) -> bool:
    try:
        return b"main.py" in (proc / "cmdline").read_bytes() and os.stat(proc).st_uid != os.getuid()
    except OSError:
        return False


@isolated
def test_writes_outside_the_workdir_fail_or_stay_in_it(tmp_path):
    name = f"escape-{uuid.uuid4().hex}.txt"
    outside = tmp_path / name  # a folder we own, not the sandbox's
    code = (f"import os\nfor path in ['/tmp/{name}', {str(outside)!r}, os.path.expanduser('~/{name}')]:\n"
            "    try:\n        open(path, 'w').write('x')\n        print('wrote', path)\n"
            "    except OSError as err:\n        print('denied', path, err.errno)")
    result = run_python(code, time_limit_s=5)
    assert f"denied {outside}" in result.stdout, result
    assert not outside.exists()
    assert not Path(f"/tmp/{name}").exists()  # the sandbox's /tmp was its own workdir, now removed


@isolated
def test_environment_holds_no_secret_of_the_parent(monkeypatch):
    monkeypatch.setenv("COTFORGE_TEST_SECRET", "hunter2-do-not-leak")
    result = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('COTFORGE_TEST_SECRET'))")
    assert "hunter2" not in result.stdout and "COTFORGE_TEST_SECRET" not in result.stdout
    assert result.stdout.strip().endswith("None"), result


@isolated
def test_infinite_loop_is_killed_at_the_time_limit():
    started = time.monotonic()
    verdict = judge("while True:\n    pass", STDIO_TESTS)
    elapsed = time.monotonic() - started
    assert not verdict.passed and "timeout over 2s" in verdict.reason, verdict
    assert "tests after 1 not run" in verdict.reason
    assert elapsed < 6, elapsed


def test_without_isolation_the_check_fails_clearly(monkeypatch):
    from cotforge.checks import sandbox

    monkeypatch.setattr(sandbox, "isolation", lambda: (False, "unshare(CLONE_NEWNET) not permitted here"))
    verdict = judge("print(7)", STDIO_TESTS)
    assert not verdict.passed and "not permitted" in verdict.reason and "require_isolation" in verdict.reason
