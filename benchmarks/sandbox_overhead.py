"""What does the sandbox cost per test? Wall time of one sandboxed run vs the same program run bare.

    python benchmarks/sandbox_overhead.py [--runs 20]

Baseline: `python -I -B main.py` as a plain subprocess (no namespaces, no launcher, no new root),
same program, same stdin, same process. Measured: `sandbox.run_python` (stdin/stdout tests) and an
assert test through the `code` check (two processes in the box: harness + solution).
The LAST line is `ratio X`: sandboxed stdio run / bare run (median wall time).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cotforge.checks import create
from cotforge.checks.sandbox import interpreter, isolation, run_python

PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"


def timed(function, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    ok, how = isolation()
    if not ok:
        sys.exit(f"no sandbox here: {how}")
    folder = Path(tempfile.mkdtemp())
    (folder / "main.py").write_text(PROGRAM)

    def bare() -> None:
        subprocess.run([interpreter(), "-I", "-B", "main.py"], input="3 4\n", cwd=folder, capture_output=True,
                       text=True, check=True)

    def boxed() -> None:
        assert run_python(PROGRAM, "3 4\n").stdout.strip() == "7"

    check = create("code", time_limit_s=4)
    sample = {"completion": "<think>x</think>\n```python\ndef add(a, b):\n    return a + b\n```", "domain": "code",
              "tests": '["assert add(3, 4) == 7"]'}

    def assert_test() -> None:
        assert check.check(sample).passed

    bare_s, boxed_s, assert_s = timed(bare, args.runs), timed(boxed, args.runs), timed(assert_test, args.runs)
    print(f"sandbox: {how}")
    print(f"bare python run:        {bare_s * 1000:7.1f} ms (median of {args.runs})")
    print(f"sandboxed stdio run:    {boxed_s * 1000:7.1f} ms")
    print(f"sandboxed assert test:  {assert_s * 1000:7.1f} ms (harness + solution processes)")
    print(f"sandboxed stdio vs bare python: ratio {boxed_s / bare_s:.2f}")


if __name__ == "__main__":
    main()
