"""`code`: the completion's final Python code block passes the prompt's tests, run in the sandbox.

Tests (the `tests` field, JSON) come as stdin/stdout pairs (`[{"input": ..., "output": ...}]`, or
APPS-style `{"inputs": [...], "outputs": [...]}`), as a list of assert statements, or as one string
of Python whose top-level asserts are the tests (its other statements are shared setup). Every test
runs in its own sandbox (see `sandbox.py`). Score = share of tests passed.

The verdict cannot be forged from inside: a stdio test is judged by its output against an expected
output the program never sees; an assert test by a harness in a second process that holds the test
and a report pipe, while the solution runs in a fresh interpreter and only answers calls with plain
data (see `_assert_rpc.py`).
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

from cotforge.checks.base import OUT_OF_DOMAIN, Check, Verdict, register
from cotforge.checks.sandbox import run_program, run_python
from cotforge.checks.text import CODE_DOMAINS, fenced_blocks, is_code_domain, reasoning_and_summary

PYTHON_TAGS = ("", "python", "py", "python3", "py3")
# Assert tests run in two processes (see _assert_rpc.py): the verdict comes from the harness over a
# pipe only it holds, and the solution never has the test (or any secret) in its memory.
_RPC_SOURCE = (Path(__file__).parent / "_assert_rpc.py").read_text()


def parse_tests(raw) -> tuple[str, list, str]:
    """('stdio', [(input, output)], '') or ('assert', [assert source], setup source)."""
    tests = json.loads(raw) if isinstance(raw, str) and raw.strip()[:1] in ("[", "{", '"') else raw
    if isinstance(tests, dict) and "inputs" in tests:
        return "stdio", list(zip(tests["inputs"], tests["outputs"])), ""
    if isinstance(tests, dict):
        tests = [tests]
    if isinstance(tests, str):
        setup, asserts = [], []
        for node in ast.parse(tests).body:
            (asserts if isinstance(node, ast.Assert) else setup).append(ast.unparse(node))
        return "assert", asserts, "\n".join(setup)
    if isinstance(tests, list) and tests and all(isinstance(t, dict) for t in tests):
        return "stdio", [(t["input"], t["output"]) for t in tests], ""
    if isinstance(tests, list) and all(isinstance(t, str) for t in tests):
        return "assert", list(tests), ""
    raise ValueError(f"unrecognised tests format ({type(tests).__name__})")


def final_code_block(sample: dict) -> tuple[str, str] | None:
    """(language tag, code) of the last fenced block of the summary, else of the reasoning."""
    reasoning, summary = reasoning_and_summary(sample)
    for text in (summary, reasoning):
        blocks = fenced_blocks(text)
        if blocks:
            info, code = blocks[-1]
            return (info.split()[0].lower() if info else ""), code
    return None


def _as_text(value) -> str:
    return value if isinstance(value, str) else "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _normalize_output(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@register
class CodeCheck(Check):
    name = "code"
    verifies = True
    timeout_s = 120.0  # the chain's hard limit; the tests' own limits below stop far earlier
    time_limit_s: float = 4.0  # per test, CPU seconds (wall: one more)
    max_total_s: float = 60.0  # tests not started by then count as failed
    memory_mb: int = 512
    max_processes: int = 16
    min_pass_rate: float = 1.0
    require_isolation: bool = True  # no network namespace available: fail rather than run unconfined
    code_domains: list | None = None  # None: cotforge.checks.text.CODE_DOMAINS

    def check(self, sample: dict) -> Verdict:
        if not is_code_domain(sample, self.code_domains or CODE_DOMAINS):
            return Verdict.skip(f"not a code domain ('{sample.get('domain')}')", code=OUT_OF_DOMAIN)
        if not sample.get("tests"):
            return Verdict.skip("no tests", missing="tests")
        try:
            kind, tests, setup = parse_tests(sample["tests"])
        except (ValueError, KeyError, SyntaxError) as err:
            return Verdict.skip(f"tests unreadable: {err}", missing="tests")
        if not tests:
            return Verdict.skip("no tests", missing="tests")
        block = final_code_block(sample)
        if block is None:
            return Verdict.fail(f"no fenced code block to run against {len(tests)} tests")
        tag, code = block
        if tag not in PYTHON_TAGS:
            return Verdict.fail(f"final code block is '{tag}'; only Python can be run")
        try:
            passed, first_failure = self._run_all(kind, tests, setup, code)
        except RuntimeError as err:  # isolation unavailable
            return Verdict.fail(str(err))
        share = passed / len(tests)
        reason = f"{passed}/{len(tests)} {kind} tests passed" + (f"; {first_failure}" if first_failure else "")
        return (Verdict.ok if share >= self.min_pass_rate and passed else Verdict.fail)(reason, score=share)

    def _run_all(self, kind: str, tests: list, setup: str, code: str) -> tuple[int, str]:
        passed, first_failure, spent = 0, "", 0.0
        for index, test in enumerate(tests, 1):
            if spent > self.max_total_s:
                return passed, first_failure or f"stopped at test {index}: {spent:.0f}s > {self.max_total_s:g}s"
            ok, why, seconds = self._run_one(kind, test, setup, code)
            spent += seconds
            passed += ok
            if not ok and not first_failure:
                first_failure = f"test {index}: {why}"
            if why.startswith("timeout"):  # the rest would most likely time out too
                return passed, first_failure + (f" (tests after {index} not run)" if index < len(tests) else "")
        return passed, first_failure

    def _run_one(self, kind: str, test, setup: str, code: str) -> tuple[bool, str, float]:
        limits = {"time_limit_s": self.time_limit_s, "memory_mb": self.memory_mb,
                  "max_processes": self.max_processes, "require_isolation": self.require_isolation}
        if kind == "stdio":
            stdin, expected = test
            result = run_python(code, _as_text(stdin), **limits)
        else:
            files = {"_assert_rpc.py": _RPC_SOURCE, "solution.py": code,
                     "test.json": json.dumps({"setup": setup, "test": test})}
            result = run_program(files, ["_assert_rpc.py", "harness"], report=True, **limits)
        if result.timed_out:
            return False, f"timeout over {self.time_limit_s:g}s", result.seconds
        if kind == "assert":
            return _assert_verdict(result)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
            return False, f"error: {last[:160]}", result.seconds
        got = _normalize_output(result.stdout)
        if got != _normalize_output(_as_text(expected)):
            shown = os.linesep.join(got)[:80]
            return False, f"expected {_as_text(expected).strip()[:80]!r}, got {shown!r}", result.seconds
        return True, "", result.seconds


def _assert_verdict(result) -> tuple[bool, str, float]:
    """Judge an assert test by the harness's report alone: exit codes and stdout can be forged."""
    try:
        report = json.loads(result.report) if result.report else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        return False, f"test did not run to its end (no verdict from the harness; {last[:120]})", result.seconds
    if report.get("ok") is True:
        return True, "", result.seconds
    if report.get("ended"):
        return False, f"test did not run to its end (solution exited early?): {report.get('error', '')}"[:200], \
            result.seconds
    return False, f"error: {str(report.get('error', ''))[:160]}", result.seconds
