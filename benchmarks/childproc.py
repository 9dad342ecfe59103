"""Figures of one benchmark step measured in a fresh child process (peak RSS is per process).

A benchmark script calls itself with `--child ...`; the child runs the step between `Figures()` and
`figures.report(**more)`, which prints one JSON line: wall seconds, CPU seconds (user + system of
every thread: on a shared machine the steadier figure), peak RSS. The parent's `run_child` runs the
child and returns that line as a dict, or exits with the child's stderr tail.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Figures:
    """Started when made: wall and CPU clocks of the step the child measures."""

    def __init__(self) -> None:
        self.cpu0, self.start = time.process_time(), time.perf_counter()

    def report(self, **more) -> None:
        print(json.dumps({"seconds": time.perf_counter() - self.start, "cpu_s": time.process_time() - self.cpu0,
                          "peak_rss_mb": peak_rss_mb(), **more}), flush=True)


def run_child(script: str, args: list[str], what: str) -> dict:
    """Run `script --child ARGS...` in a fresh interpreter; its last stdout line, parsed."""
    result = subprocess.run([sys.executable, script, "--child", *map(str, args)], check=False,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{what} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def size_arguments(description: str, child_names: tuple[str, str]) -> argparse.Namespace:
    """The scale benchmarks' options: `--quick`, `--sizes SMALL LARGE` (resolved into `args.sizes`, a
    pair of row counts), and the hidden `--child` that `run_child` calls them back with."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="20K and 200K rows instead of 100K and 1M")
    parser.add_argument("--sizes", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="any two row counts")
    parser.add_argument("--child", nargs=2, metavar=child_names, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = tuple(args.sizes) if args.sizes else (20_000, 200_000) if args.quick else (100_000, 1_000_000)
    return args
