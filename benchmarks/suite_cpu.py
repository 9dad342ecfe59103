"""Where a test run's time and CPU go: per-worker busy time and CPU seconds by kind of process.

Runs a command (default: the README's test line) while it
- samples `/proc/*/stat` every 0.5 s, so daemons that nobody waits for (Ray's raylet, vLLM's
  spawned EngineCore and Worker) are counted, which `/usr/bin/time` misses, and
- records each test's start and end on its xdist worker (this file is also the pytest plugin that
  `-p suite_cpu` loads; the workers write to $SUITE_CPU_DIR).

    python benchmarks/suite_cpu.py [--out DIR] [-- COMMAND ...]

Prints CPU seconds by kind of process, each worker's busy time and its heaviest test files. The last
line gives the cores' use against the named baseline of every core busy for the whole wall time:
`ratio = CPU seconds / (cores x wall)`. Session 12's figures (docs/notes/session12-closing.md) came
from the first copies of this script. A run of the whole suite takes as long as the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

README_TEST_LINE = ["python", "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup"]


# --- the pytest plugin half (runs in each xdist worker) -------------------------------------------
_started: dict[str, float] = {}


def pytest_runtest_logstart(nodeid, location):
    _started[nodeid] = time.time()


def pytest_runtest_logfinish(nodeid, location):
    folder = os.environ.get("SUITE_CPU_DIR")
    if folder:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "controller")
        with open(Path(folder) / f"timeline-{worker}.tsv", "a") as out:
            out.write(f"{_started.get(nodeid, time.time()):.2f}\t{time.time():.2f}\t{nodeid}\n")


# --- the sampler half -------------------------------------------------------------------------------
def kind(cmdline: str, comm: str) -> str:
    """A process's kind, from its name and command line (vLLM and Ray name their processes)."""
    if comm.startswith(("VLLM", "ray::")):
        return comm
    for daemon in ("raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env", "monitor.py"):
        if daemon in cmdline:
            return f"ray daemon {daemon}"
    if "chrom" in comm:
        return "chromium"
    if "exec(eval(sys.stdin" in cmdline or "execnet" in cmdline:
        return "xdist worker"
    if "cotforge.cli" in cmdline or "/bin/cotforge " in cmdline:
        return "cotforge subprocess" + (" (vLLM venv)" if ".venv-vllm" in cmdline else "")
    if "_sandbox_init" in cmdline:
        return "sandboxed program"
    if comm in ("uv", "pip") or " -m pip " in cmdline or "/bin/pip " in cmdline:
        return "installer"
    if "pytest" in cmdline:
        return "pytest controller"
    if "python" in comm or "python" in cmdline.split(" ", 1)[0]:
        return "python: " + " ".join(cmdline.split()[1:2])[:50]
    return comm


class Sampler(threading.Thread):
    """CPU seconds by kind of process, from the tick counters of every process alive at each sample."""

    def __init__(self, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.interval_s, self.stopped = interval_s, threading.Event()
        self.cpu: dict[str, float] = defaultdict(float)
        self._ticks: dict[int, int] = {}
        self._hz = os.sysconf("SC_CLK_TCK")

    def sweep(self, count: bool) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:  # gone between the listing and the read
                continue
            ticks = int(fields[11]) + int(fields[12])  # utime + stime
            before = self._ticks.get(int(entry), 0)  # 0: born since the last sweep, all its ticks count
            if count and ticks > before:
                self.cpu[kind(cmdline, comm)] += (ticks - before) / self._hz
            self._ticks[int(entry)] = ticks

    def run(self) -> None:
        self.sweep(count=False)  # what ran before the command is not counted
        while not self.stopped.wait(self.interval_s):
            self.sweep(count=True)


def timelines(folder: Path) -> dict[str, list[tuple[float, float, str]]]:
    out = {}
    for path in sorted(folder.glob("timeline-gw*.tsv")):
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        out[path.stem.removeprefix("timeline-")] = [(float(a), float(b), c) for a, b, c in rows]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cotforge-suite-cpu",
                        help="folder for the timelines")
    parser.add_argument("command", nargs="*", help="the command to run (default: the README's test line)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("timeline-*.tsv"):
        old.unlink()
    command = args.command or [sys.executable, *README_TEST_LINE[1:]]
    env = {**os.environ, "SUITE_CPU_DIR": str(args.out.resolve()),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
           "PYTEST_ADDOPTS": " ".join(filter(None, [os.environ.get("PYTEST_ADDOPTS"), "-p suite_cpu"]))}
    sampler = Sampler()
    sampler.start()
    start = time.time()
    returncode = subprocess.call(command, env=env)
    wall = time.time() - start
    sampler.stopped.set()
    sampler.join()

    total = sum(sampler.cpu.values())
    print(f"\ncommand exit {returncode}, wall {wall:.0f} s, CPU {total:.0f} s")
    for name, seconds in sorted(sampler.cpu.items(), key=lambda item: -item[1])[:15]:
        print(f"  {seconds:7.1f} s  {100 * seconds / max(total, 1e-9):5.1f}%  {name}")
    for worker, rows in timelines(args.out).items():
        by_file = defaultdict(float)
        for begin, end, nodeid in rows:
            by_file[nodeid.split("::")[0]] += end - begin
        heaviest = ", ".join(f"{Path(f).name} {s:.0f} s" for f, s in sorted(by_file.items(), key=lambda i: -i[1])[:4])
        print(f"  {worker}: {len(rows)} tests, busy {sum(by_file.values()):.0f} s ({heaviest})")
    cores = os.cpu_count() or 1
    print(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(total, 1), "cores": cores}))
    print(f"cores' use: CPU {total:.0f} s over {cores} cores x {wall:.0f} s wall (every core busy), "
          f"ratio {total / (cores * wall):.3f}")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
