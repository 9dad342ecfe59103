"""Figures of one benchmark step measured in a fresh child process (peak RSS is per process).

A benchmark script calls itself with `--child ...`; the child runs the step between `Figures()` and
`figures.report(**more)`, which prints one JSON line: wall seconds, CPU seconds (user + system of
every thread: on a shared machine the steadier figure), peak RSS. The parent's `run_child` runs the
child and returns that line as a dict, or exits with the child's stderr tail.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time


def peak_rss_mb() -> float:
    """This process's peak resident set so far: VmHWM of its own address space. Not ru_maxrss:
    Linux carries that over fork and exec, so a child reported its parent's peak at the fork (the
    filter/mix parents hold their 1M-row fixtures: 1.5 GB "peaks" of a child that used 250 MB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DescendantCPU:
    """CPU seconds of every process below this one (a check pool's forkserver workers are children
    of the forkserver, so RUSAGE_CHILDREN never sees them): /proc read every `every` seconds on a
    thread, each process's last reading kept (a worker's last fraction of a second can be missed)."""

    def __init__(self, every: float = 0.5) -> None:
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._loop, args=(every,), daemon=True)
        self._thread.start()

    def _loop(self, every: float) -> None:
        while not self._stop.wait(every):
            self.sample()

    def sample(self) -> None:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue  # ended meanwhile
                stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / self._tick)
        mine = {os.getpid()}
        grew = True
        while grew:  # descendants: parents first, whatever order /proc lists them in
            grew = False
            for pid, (ppid, _) in stats.items():
                if ppid in mine and pid not in mine:
                    mine.add(pid)
                    grew = True
        for pid in mine - {os.getpid()}:
            self._seen[pid] = stats[pid][1]

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.sample()
        return sum(self._seen.values())


class Figures:
    """Started when made: wall and CPU clocks of the step the child measures. `children_cpu_s`: of
    the processes below it (filter's check pool), which `cpu_s` does not include."""

    def __init__(self) -> None:
        self.cpu0, self.start = time.process_time(), time.perf_counter()
        self.children = DescendantCPU()

    def report(self, **more) -> None:
        print(json.dumps({"seconds": time.perf_counter() - self.start, "cpu_s": time.process_time() - self.cpu0,
                          "children_cpu_s": self.children.stop(), "peak_rss_mb": peak_rss_mb(),
                          **more}), flush=True)


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
