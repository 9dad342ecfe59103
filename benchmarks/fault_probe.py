"""Issue 23's fault probe, rerun after the fix: each fault against 200 "Compute A + B." prompts and a
simulated OpenAI-compatible server on loopback (tests/simserver.py), every result checked against an
undisturbed run of the same command. Prints a Markdown table (fault, result, data right?); the last line
counts the faults whose data came out right.

    python benchmarks/fault_probe.py [--prompts 200]

Outages here are real: the server process is killed and a new one started on the same port after the
stated time (a probe may sleep; the tests wait on events instead).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from servers import Refuser, free_port, sim_server  # noqa: E402

from cotforge.io.rundir import RunDir  # noqa: E402
from cotforge.query import run_query  # noqa: E402

ROWS = "SELECT id, seed, completion, accepted FROM samples ORDER BY id"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def cli(*args, background: bool = False):
    command = [sys.executable, "-m", "cotforge.cli", *map(str, args)]
    if background:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=900, check=False)


def last_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("generate: ")]
    return lines[-1] if lines else ""


def wait_shards(out: Path, count: int) -> None:
    deadline = time.monotonic() + 300
    while len(list((out / "samples").glob("part-*.parquet"))) < count and time.monotonic() < deadline:
        time.sleep(0.05)


class Probe:
    def __init__(self, work: Path, prompts: int) -> None:
        self.work = work
        self.prompts = work / "p.jsonl"
        self.prompts.write_text("".join(json.dumps({"id": f"q{i:03d}", "prompt": f"Compute {i} + {i + 7}.",
                                                    "gold": str(2 * i + 7), "pass_rate": 0.4}) + "\n"
                                        for i in range(prompts)))
        self.rows: list[tuple[str, str, str]] = []
        self.right = self.total = 0

    def gen_args(self, out: Path, *urls: str) -> list:
        return ["generate", self.prompts, "--out", out, "--engine", "openai", "--model", "sim",
                *[a for u in urls for a in ("--base-url", u)], "--k", "2", "--max-rounds", "3", "--max-tokens", "64",
                "--checks", "answer", "--jobs", "0", "--concurrency", "16", "--shard-size", "8"]

    def row(self, fault: str, result: str, right: bool) -> None:
        self.rows.append((fault, result.replace("|", "\\|"), "yes" if right else "**no**"))
        self.total += 1
        self.right += right
        print(f"  {fault}: {result} -> {'yes' if right else 'NO'}", file=sys.stderr, flush=True)

    def same(self, out: Path) -> bool:
        return run_query(out, ROWS)[1] == self.reference

    def run(self) -> None:
        with sim_server(slots=16, step_ms=3, prompts=self.prompts, median_tokens=40) as sim:
            ref = self.work / "ref"
            done = cli(*self.gen_args(ref, sim.base_url))
            assert done.returncode == 0, done.stderr
            self.reference = run_query(ref, ROWS)[1]
            keys = len(self.reference)
            print(f"undisturbed run: {keys} samples", file=sys.stderr)
            self.back_door(sim)
            self.restart(sim, keys)
            self.outage_past_limit(sim)
            self.blanks(sim)
            self.bad_bodies(sim)
            self.progress(sim)
        self.fleet_restart()
        self.inputs_and_errors()

    def back_door(self, sim) -> None:
        killed = self.work / "K"
        process = cli(*self.gen_args(killed, sim.base_url), background=True)
        wait_shards(killed, 5)
        process.kill()
        process.wait()
        committed = RunDir(killed).count_rows("samples")
        refused = cli("filter", killed, "--out", self.work / "F", "--checks", "answer", "--jobs", "0")
        self.row("1. `filter` of a killed generate run", f"exit {refused.returncode}: {last_line(refused)}",
                 refused.returncode == 1 and not (self.work / "F").exists())
        rw = cli("rewrite", killed, "--out", self.work / "RW", "--engine", "openai", "--model", "sim")
        self.row("1/8. `rewrite` of a killed run", f"exit {rw.returncode}: {last_line(rw)[:120]}...",
                 rw.returncode == 1 and "unfinished generate run" in rw.stderr)
        cli("filter", killed, "--out", self.work / "F", "--checks", "answer", "--jobs", "0", "--allow-partial")
        cli("export", self.work / "F", "--out", self.work / "ds")
        card = (self.work / "ds" / "README.md").read_text()
        note = re.search(r"\*\*Partial data\.\*\* (.*)", card)
        self.row("1. `filter --allow-partial` then `export`", f"card: \"Partial data. {note.group(1) if note else ''}\"",
                 bool(note) and f"{committed} rows" in note.group(1))

    def restart(self, sim, keys: int) -> None:
        out = self.work / "restart"
        process = cli(*self.gen_args(out, sim.base_url), background=True)
        wait_shards(out, 3)
        sim.kill()
        with Refuser(sim.port, 10**9):
            time.sleep(20)  # down 20 s: refused and reset connections all along
        sim.start()
        stdout, stderr = process.communicate(timeout=900)
        faults = next((line.strip() for line in stdout.splitlines() if "server faults" in line), "")
        self.row("2. server killed, back 20 s later (defaults)", f"exit {process.returncode}; {faults}",
                 process.returncode == 0 and self.same(out))

    def outage_past_limit(self, sim) -> None:
        out = self.work / "limit"
        command = [*self.gen_args(out, sim.base_url), "--engine-option", "outage_s=5"]
        process = cli(*command, background=True)
        wait_shards(out, 3)
        sim.kill()
        with Refuser(sim.port, 10**9):
            _, stderr = process.communicate(timeout=600)
        line = stderr.strip().splitlines()[-1]
        sim.start()
        resumed = cli(*command)
        self.row("2. server down for good, `outage_s=5`; then back, same command",
                 f"exit {process.returncode}: {line[:60]}...{line[-70:]}; rerun exit {resumed.returncode}",
                 process.returncode == 1 and resumed.returncode == 0 and self.same(out))

    def blanks(self, sim) -> None:
        out = self.work / "blank3"
        sim.set_faults(blank_every=3)
        done = cli(*self.gen_args(out, sim.base_url))
        faults = next((line.strip() for line in done.stdout.splitlines() if "server faults" in line), "")
        samples = RunDir(out).count_rows("samples")
        self.row("3. server blanks every third answer", f"exit {done.returncode}; {samples} samples "
                 f"({len(self.reference)} undisturbed); {faults}", done.returncode == 0 and self.same(out))
        sim.set_faults(blank_every=1)
        out = self.work / "blank_all"
        done = cli(*self.gen_args(out, sim.base_url), "--engine-option", "backoff_s=0.1")
        lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("generate: ")]
        self.row("3. server blanks every answer", f"exit {done.returncode}, {len(lines)} line: {last_line(done)[:150]}...",
                 done.returncode == 1 and len(lines) == 1 and RunDir(out).unfinished() == "running")
        sim.set_faults(blank_every=0)

    def bad_bodies(self, sim) -> None:
        out = self.work / "bodies"
        sim.set_faults(bad_json_every=7, no_choices_every=11)
        done = cli(*self.gen_args(out, sim.base_url))
        faults = next((line.strip() for line in done.stdout.splitlines() if "server faults" in line), "")
        self.row("4. cut 200 bodies (every 7th), 200 without choices (every 11th)",
                 f"exit {done.returncode}; {faults}", done.returncode == 0 and self.same(out))
        sim.set_faults(bad_json_every=0, no_choices_every=0)

    def progress(self, sim) -> None:
        out = self.work / "progress"
        process = cli(*self.gen_args(out, sim.base_url), background=True)
        wait_shards(out, 6)
        process.kill()
        process.wait()
        done = cli(*self.gen_args(out, sim.base_url))
        first = next((line for line in done.stderr.splitlines() if line.startswith("generate: ")), "")
        rate = float(re.search(r"\(([0-9.e+]+)/s\)", first).group(1)) if first else 1e9
        self.row("9. progress line after a resume", f"`{first.strip()}`", done.returncode == 0 and rate < 1000
                 and self.same(out))

    def fleet_restart(self) -> None:
        with sim_server(slots=6, step_ms=3, prompts=self.prompts, median_tokens=40) as a, \
                sim_server(slots=6, step_ms=3, prompts=self.prompts, median_tokens=40) as b, \
                sim_server(slots=6, step_ms=3, prompts=self.prompts, median_tokens=40) as c:
            out = self.work / "fleet"
            process = cli(*self.gen_args(out, a.base_url, b.base_url, c.base_url), background=True)
            wait_shards(out, 3)
            for sim in (a, b, c):
                sim.kill()
            with ExitStack() as stack:
                for sim in (a, b, c):
                    stack.enter_context(Refuser(sim.port, 10**9))
                time.sleep(5)
            for sim in (a, b, c):
                sim.start()
            _, stderr = process.communicate(timeout=900)
            self.row("2. fleet of 3, all killed, back 5 s later", f"exit {process.returncode}",
                     process.returncode == 0 and self.same(out))

    def inputs_and_errors(self) -> None:
        empty = self.work / "e.jsonl"
        empty.write_text("")
        done = cli("generate", empty, "--out", self.work / "R", "--engine", "openai", "--base-url",
                   "http://127.0.0.1:9", "--model", "m")
        self.row("5. empty prompts file", f"exit {done.returncode}: {last_line(done)}",
                 done.returncode == 1 and RunDir(self.work / "R").unfinished() == "running")
        folder = self.work / "folder"
        folder.mkdir()
        shutil.copy(self.prompts, folder / "p.jsonl")
        (folder / "notes.txt").write_text("x")
        (folder / "plot.png").write_bytes(b"\x89PNG")
        done = cli("filter", folder, "--out", self.work / "FF", "--checks", "format", "--jobs", "0",
                   "--bad-rows", "quarantine")
        note = next((line for line in done.stderr.splitlines() if "note:" in line), "")
        self.row("6. prompts folder with .txt and .png", note, "notes.txt, plot.png" in note)
        start = time.monotonic()
        done = cli(*self.gen_args(self.work / "U", "not-a-url"))
        self.row("7. `--base-url not-a-url`", f"exit {done.returncode} in {time.monotonic() - start:.1f} s: "
                 f"{last_line(done)}", done.returncode == 1 and not (self.work / "U").exists())
        dead = f"http://127.0.0.1:{free_port()}/v1"
        args = self.gen_args(self.work / "NM", dead)
        done = cli(*[a for a in args if a not in ("--model", "sim")], "--engine-option", "outage_s=0")  # no wait
        self.row("7. no `--model`, server unreachable", f"exit {done.returncode}: {last_line(done)}",
                 done.returncode == 1 and "--model" in last_line(done) and "cannot be reached" in last_line(done))
        with sim_server(slots=16, step_ms=3, prompts=self.prompts, median_tokens=40) as sim:
            done = cli(*self.gen_args(self.work / "FB", sim.base_url, dead))
            note = next((line for line in done.stderr.splitlines() if "note:" in line), "")
            self.row("7. fleet with one bad URL", f"exit {done.returncode}; `{note}`",
                     done.returncode == 0 and dead in note and self.same(self.work / "FB"))
        from cotforge.io.review import append_review

        append_review(self.work / "F", run_query(self.work / "F", "SELECT min(id) FROM samples")[1][0][0], "reject")
        done = cli("filter", self.work / "K", "--out", self.work / "F", "--checks", "answer", "--jobs", "0",
                   "--allow-partial", "--overwrite")
        self.row("8. `--overwrite` of a run with review decisions", f"exit {done.returncode}: {last_line(done)}",
                 done.returncode == 1 and len(RunDir(self.work / "F").shards("reviews")) == 1)
        self.disk_full()

    def disk_full(self) -> None:
        mount = self.work / "small"
        mount.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          check=False).returncode != 0:
            self.row("7. disk full before the first write", "not run (mounting a tmpfs needs root)", True)
            return
        try:
            fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError:
                pass
            finally:
                os.close(fd)
            done = cli(*self.gen_args(mount / "run", "http://127.0.0.1:9"))
            self.row("7. disk full before the first write", f"exit {done.returncode}: {last_line(done)}",
                     done.returncode == 1 and last_line(done).startswith(str(mount / "run")))
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        probe = Probe(Path(work), options.prompts)
        started = time.monotonic()
        probe.run()
    print("| fault | result after the fix | data right? |")
    print("|---|---|---|")
    for fault, result, right in probe.rows:
        print(f"| {fault} | {result} | {right} |")
    print(f"faults probed {probe.total} in {time.monotonic() - started:.0f} s; data right in {probe.right} of "
          f"{probe.total} (ratio {probe.right / max(probe.total, 1):.2f} against the undisturbed run)")


if __name__ == "__main__":
    main()
