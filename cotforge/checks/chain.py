"""The check chain: presets, a supervised process pool with hard per-item limits, the judges, the gate.

`Chain` is the one chain assembly: generate, filter (local and on Ray), rewrite and the rewards all
build it (`Chain.for_data(preset)` for training data, `Chain(specs)` for library use). It runs the
rule checks in the worker pool below, then any `judge` entries in engine batches (cotforge.judge),
then the verification gate (`verified`).

Workers run every check of the chain on each sample they are given. Before each check a worker
writes (item, check, start time) to shared memory; the parent kills a worker whose current check
overran its `timeout_s`, gives that check a `timeout` verdict, replaces the worker and re-queues the
item without that check. A worker that dies (segfault, OOM kill, memory rlimit) is handled the same
way, except that a death is first taken for an accident (the OOM killer, a kill from outside): the
item is retried on a fresh worker, and only an item that kills its worker a second time gets the
`worker died` verdict. So every item gets a verdict for every check, and no single answer can stall
the run for more than its limit.

Workers are forkserver processes: like any `multiprocessing` child they re-import the caller's
`__main__` module, so a script that drives a chain should keep heavy imports (torch, a model) inside
its `if __name__ == "__main__":` block; the `cotforge` CLI does.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import resource
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Self

from cotforge.checks import load_all
from cotforge.checks.base import (ERROR, JUDGED, MEMORY, NOT_APPLICABLE, NOT_MATH, REGISTRY, STOPPED_EARLY, TIMEOUT,
                                  VERIFIED, WORKER_DIED, Check, Verdict, create, missing_code, missing_requirements)
from cotforge.errors import CotforgeError
from cotforge.io.yamlfile import load_mapping
from cotforge.resources import shipped_folder

DEFAULT_WORKER_MEMORY = 4 * 1024**3
ENVIRONMENT = -1  # item number of a worker's message that the environment stops it (items are >= 0)
BATCH = 16


@dataclass
class CheckSpec:
    name: str
    options: dict = field(default_factory=dict)
    timeout_s: float | None = None
    module: str | None = None  # where the check class lives, so worker processes can import it


def preset_path(name: str) -> Path | None:
    for folder in (Path.cwd() / "filters", shipped_folder("filters")):
        candidate = folder / f"{name}.yaml"
        if candidate.exists():
            return candidate
    return None


PRESET_OPTIONS = ("allow_unverified",)  # top-level preset keys besides `checks`


def preset_options(spec: str | list) -> dict:
    """The preset's top-level options (`allow_unverified: true`); none for a comma list."""
    if isinstance(spec, list) or not (spec.endswith((".yaml", ".yml")) or preset_path(spec)):
        return {}
    path = Path(spec) if spec.endswith((".yaml", ".yml")) else preset_path(spec)
    if not path.exists():
        raise CotforgeError(f"--checks {spec}: no such preset file")
    mapping = load_mapping(path, "check preset")
    unknown = set(mapping) - {"checks", *PRESET_OPTIONS}
    if unknown:
        raise CotforgeError(f"{path}: unknown preset key(s) {', '.join(sorted(unknown))} "
                            f"(known: checks, {', '.join(PRESET_OPTIONS)})")
    options = {key: mapping[key] for key in PRESET_OPTIONS if key in mapping}
    if not isinstance(options.get("allow_unverified", False), bool):
        raise CotforgeError(f"{path}: allow_unverified must be true or false")
    return options


def parse_specs(spec: str | list) -> list[CheckSpec]:
    """A preset name (`r1`), a YAML path, or a comma list of check names (`format,answer`)."""
    if isinstance(spec, list):
        entries = spec
    elif spec.endswith((".yaml", ".yml")) or preset_path(spec):
        path = Path(spec) if spec.endswith((".yaml", ".yml")) else preset_path(spec)
        if not path.exists():
            raise CotforgeError(f"--checks {spec}: no such preset file")
        entries = load_mapping(path, "check preset").get("checks", [])
    else:
        entries = [name.strip() for name in spec.split(",") if name.strip()]
    specs = []
    for entry in entries:
        if isinstance(entry, str):
            specs.append(CheckSpec(entry))
            continue
        entry = dict(entry)
        name = entry.pop("check", None)
        if not name:
            raise CotforgeError(f"check entry {entry!r} has no 'check' name")
        timeout = entry.pop("timeout_s", None)
        specs.append(CheckSpec(name, entry, timeout))
    if not specs:
        raise CotforgeError(f"--checks {spec!r}: no checks")
    return specs


def check_modules() -> list[str]:
    import cotforge.checks as package

    load_all()
    return sorted({module for module in sys.modules if module.startswith(package.__name__ + ".")})


class MissingDependency(CotforgeError):
    """A check cannot run in this environment (a package it imports is missing or broken): an error of
    the installation, never a verdict on a row."""


def import_problem(err: ImportError) -> str:
    """'<the error> (pip install <its package>, or reinstall cotforge)', naming the pip package where
    a check's `requires` knows it."""
    module = (err.name or "").split(".")[0]
    packages = {m: p for cls in REGISTRY.values() for m, p in cls.requires}
    return f"{err} (pip install {packages.get(module, module or 'the missing package')}, or reinstall cotforge)"


def build_checks(specs: list[CheckSpec]) -> list[Check]:
    """The checks of `specs`; a wrong name or option, or a missing dependency, is one CotforgeError
    here, before any row is judged."""
    for spec in specs:
        if spec.module:
            importlib.import_module(spec.module)
    try:
        checks = [create(s.name, **s.options) for s in specs]
    except (KeyError, TypeError, ValueError) as err:  # ValueError: an option's value (rounding: bogus)
        raise CotforgeError(str(err).strip("\"'")) from None
    for spec, check in zip(specs, checks):
        spec.module = type(check).__module__
        missing = missing_requirements(type(check))
        if missing:
            raise MissingDependency(f"check '{spec.name}' needs {' and '.join(missing)}, which is not installed: "
                                    f"pip install {' '.join(missing)} (or reinstall cotforge, which depends on it)")
    return checks


def early_stop_verdicts(checks: list[Check], stop: dict) -> list[Verdict]:
    """The verdicts of a sample the engine's early stop ended (`sample["early_stop"]`: check, reason,
    token): the check that stopped it fails it with its reason and the token (the first check of the
    chain where that check is not in it: `format`, a reasoning budget's); every other check is n/a."""
    names = [check.name for check in checks]
    who = stop.get("check")
    blamed = names.index(who) if who in names else 0
    failed = Verdict.fail(f"stopped early at token {stop.get('token')}: {stop.get('reason')}", code=STOPPED_EARLY)
    other = Verdict.skip(f"stopped early by {who}", code=STOPPED_EARLY)
    return [failed if index == blamed else other for index in range(len(checks))]


def run_checks(checks: list[Check], sample: dict, skip: dict | None = None, status=None) -> list[Verdict]:
    """All checks on one sample, in order; a check that raises gets a failing verdict, except for an
    import error, which is the environment's (MissingDependency). A sample the engine stopped early
    is not judged further (`early_stop_verdicts`)."""
    if sample.get("early_stop"):
        return early_stop_verdicts(checks, sample["early_stop"])
    verdicts = []
    for index, check in enumerate(checks):
        if skip and index in skip:
            verdicts.append(skip[index])
            continue
        if status is not None:
            status[1], status[2] = index, time.monotonic()
        try:
            verdict = check.check(sample)
        except ImportError as err:  # the environment, not the row: stop the run, one line
            raise MissingDependency(f"check '{check.name}' cannot run here: {import_problem(err)}") from None
        except MemoryError:
            verdict = Verdict.fail("memory limit exceeded", code=MEMORY)
        except Exception as err:  # noqa: BLE001 - a broken check must not lose the row
            verdict = Verdict.fail(f"error: {type(err).__name__}: {str(err)[:200]}", code=ERROR)
        if status is not None:
            status[2] = 0.0
        verdicts.append(Verdict(*verdict))
    return verdicts


def _worker_main(conn, specs: list[CheckSpec], status, memory_bytes: int) -> None:
    # Ctrl-C reaches the whole process group: the parent decides when workers stop (it closes them).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        try:
            checks = build_checks(specs)
        except Exception as err:  # noqa: BLE001 - reported to the parent, which stops the run
            why = import_problem(err) if isinstance(err, ImportError) else f"{type(err).__name__}: {err}"
            conn.send((ENVIRONMENT, f"check worker could not start: {why}", None, None))
            return
        while True:
            message = conn.recv()
            if message is None:
                return
            for item, sample, skip in message:
                status[0] = item
                try:
                    verdicts = run_checks(checks, sample, skip, status)
                except MissingDependency as err:
                    conn.send((ENVIRONMENT, str(err), None, None))
                    return
                conn.send((item, verdicts, sample.get("answer"), sample.get("language")))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone (killed or interrupted): nothing left to report to


class _Worker:
    def __init__(self, ctx, specs, memory_bytes):
        self.status = ctx.RawArray("d", 3)
        parent, child = ctx.Pipe()
        self.conn = parent
        self.process = ctx.Process(target=_worker_main, args=(child, specs, self.status, memory_bytes),
                                   daemon=True)
        self.process.start()
        child.close()
        self.inflight: dict[int, tuple] = {}

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


@dataclass
class Result:
    verdicts: list[Verdict]
    answer: str | None
    language: str | None = None  # what the language check detected, for a sample that named none

    @property
    def accepted(self) -> bool:
        return all(v.passed for v in self.verdicts)


class VerificationGate:
    """Did any verifying check (answer, code, a judge ...) judge the sample? A sample none could judge
    (no gold, no tests, unreadable tests) is unverified: rejected, or n/a where the preset allows it.
    Appended as the `verified` verdict after every other stage."""

    def __init__(self, verifying: dict[int, str], allow_unverified: bool):
        self.verifying = verifying  # chain position -> name of the verifying checks
        self.allow_unverified = allow_unverified

    def config(self) -> dict:
        return {"check": VERIFIED, "allow_unverified": self.allow_unverified}

    def verdict(self, verdicts: list[Verdict]) -> Verdict:
        if any(v.code == STOPPED_EARLY for v in verdicts):  # rejected by its early stop; nothing to verify
            return Verdict.skip("stopped early", code=STOPPED_EARLY)
        judged = [name for i, name in self.verifying.items() if verdicts[i].status != NOT_APPLICABLE]
        if judged:
            return Verdict(True, 1.0, f"judged by {', '.join(judged)}", code=JUDGED)
        if any(verdicts[i].code == NOT_MATH for i in self.verifying):  # a gold in words and no judge ran
            reason = "the gold is words, not math: only a judge can grade it (add `judge` to the checks)"
            if self.allow_unverified:
                return Verdict.skip(f"unverified ({reason}), allowed by the preset", code=NOT_MATH)
            return Verdict(False, None, f"unverified: {reason}", None, NOT_MATH)
        missing = sorted({verdicts[i].missing for i in self.verifying if verdicts[i].missing}) or ["gold"]
        what, code = " or ".join(missing), missing_code(missing)
        if self.allow_unverified:
            return Verdict.skip(f"unverified (no {what}), allowed by the preset", missing=what, code=code)
        return Verdict(False, None, f"unverified: no {what} to check against (allow_unverified: true in the "
                                    f"preset accepts such samples)", what, code)

    def apply(self, results: list[Result]) -> list[Result]:
        for result in results:
            result.verdicts.append(self.verdict(result.verdicts))
        return results


def verdict_rows(samples: list[dict], results: list[Result], names: list[str]) -> list[dict]:
    """Attach verdicts, extracted answer, detected language and the accepted flag to each sample."""
    for sample, result in zip(samples, results):
        sample["verdicts"] = [v.record(name) for name, v in zip(names, result.verdicts)]
        if result.answer is not None:
            sample["answer"] = result.answer
        if result.language and not sample.get("language"):
            sample["language"] = result.language
        sample["accepted"] = result.accepted
    return samples


JUDGE = "judge"  # the check name of a model judge (cotforge.judge): a batched stage, not a pool check


def split_judges(specs: list[CheckSpec]) -> tuple[list[CheckSpec], list]:
    """(rule check specs, judge configs), preset order kept within each; the judge package is imported
    only when there is a judge (it brings the engines)."""
    rules, judges = specs, []
    if any(spec.name == JUDGE for spec in specs):
        from cotforge.judge.stage import split_specs

        rules, judges = split_specs(specs)
    names = [j.name for j in judges] + [s.name for s in rules]
    if len(set(names)) != len(names):
        raise CotforgeError("checks: two entries share a name; give each judge its own `name`")
    return rules, judges


def _judge_stages(configs: list, engines: dict | None) -> list:
    from cotforge.judge.stage import JudgeStage

    return [JudgeStage(config, (engines or {}).get(config.name)) for config in configs]



# The fork server listens on an AF_UNIX socket in multiprocessing's temp folder (TMPDIR/pymp-XXXXXXXX/
# listener-XXXXXXXX); Linux caps that path at 107 bytes, so a long TMPDIR (a CI's or pytest's tmp_path)
# made the pool die at start with a traceback.
SOCKET_PATH_MAX = 107
SOCKET_NAME_LEN = len("/pymp-XXXXXXXX/listener-XXXXXXXX")
SHORT_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")


def short_socket_folder() -> str:
    """multiprocessing's temp folder, made under a short folder when TMPDIR is too long for the socket."""
    import multiprocessing.util
    import tempfile

    fits = len(tempfile.gettempdir().encode()) + SOCKET_NAME_LEN <= SOCKET_PATH_MAX
    if fits or mp.current_process()._config.get("tempdir"):  # made already (by us or the caller): it binds
        return multiprocessing.util.get_temp_dir()
    for folder in SHORT_FOLDERS:
        if os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK):
            saved, tempfile.tempdir = tempfile.tempdir, folder
            try:  # get_temp_dir makes its folder once per process and keeps it: only the socket moves
                return multiprocessing.util.get_temp_dir()
            finally:
                tempfile.tempdir = saved
    raise CotforgeError(f"TMPDIR {tempfile.gettempdir()!r} is too long for the check pool's Unix socket "
                        f"(at most {SOCKET_PATH_MAX - SOCKET_NAME_LEN} bytes) and none of "
                        f"{', '.join(SHORT_FOLDERS)} is writable: set TMPDIR to a shorter folder")


class Chain:
    """The one chain assembly, used by generate, filter (local and on Ray), rewrite and the rewards:
    the rule checks in the supervised worker pool, then any `judge` entries in engine batches
    (`cotforge.judge`: rules first, a judge is asked only where the rules left the row open), then
    the verification gate. `run(samples)` gives one `Result` per sample with a verdict per name.
    """

    def __init__(self, specs: list[CheckSpec], jobs: int | None = None,
                 worker_memory: int = DEFAULT_WORKER_MEMORY, allow_unverified: bool | None = None,
                 engines: dict | None = None):
        """`allow_unverified`: None (library use, rewards) adds no verification stage; False rejects a
        sample that no verifying check (rule or judge) could judge; True accepts it, counted as
        unverified. `engines`: judge name -> an Engine to judge with (else each judge builds its own)."""
        rules, judges = split_judges(specs)
        self.specs = rules
        self.checks = build_checks(rules)
        self.judges = _judge_stages(judges, engines) if judges else []
        self.verifying = {i: spec.name for i, (spec, check) in enumerate(zip(rules, self.checks))
                          if type(check).verifies}
        self.verifying.update({len(rules) + k: stage.config.name for k, stage in enumerate(self.judges)})
        self.gate = VerificationGate(self.verifying, allow_unverified) \
            if allow_unverified is not None and self.verifying else None
        self.timeouts = [s.timeout_s or type(c).timeout_s for s, c in zip(rules, self.checks)]
        # No rule checks: no worker pool to start.
        self.jobs = 0 if not rules else (os.cpu_count() or 1) if jobs is None else jobs
        self.worker_memory = worker_memory
        self._workers: list[_Worker] = []
        self._ctx = None
        self.worker_deaths = self.retried = self.died_twice = 0

    @staticmethod
    def validate(specs: list[CheckSpec]) -> None:
        """Raise the one-line error building this chain would (unknown check, wrong option, missing
        dependency, bad judge options) without starting a pool or an engine: for callers that build
        the chain later (generate builds it in its checker thread) but must fail before any work."""
        rules, _ = split_judges(specs)
        build_checks([CheckSpec(s.name, dict(s.options), s.timeout_s, s.module) for s in rules])

    @classmethod
    def from_spec(cls, spec: str | list, jobs: int | None = None, **kwargs) -> Self:
        """A preset name, YAML path, comma list or list of entries; no verification stage."""
        return cls(parse_specs(spec), jobs, **kwargs)

    @classmethod
    def for_data(cls, spec: str | list, jobs: int | None = None, **kwargs) -> Self:
        """The chain that makes training data: unverified samples rejected unless the preset says
        `allow_unverified: true`."""
        return cls(parse_specs(spec), jobs, allow_unverified=preset_options(spec).get("allow_unverified", False),
                   **kwargs)

    @property
    def rule_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def names(self) -> list[str]:
        return self.rule_names + [stage.config.name for stage in self.judges] + ([VERIFIED] if self.gate else [])

    def config(self) -> list[dict]:
        """What decides the verdicts (the run's resume key): every entry's options and limits."""
        config = [{"check": s.name, **c.options(), "timeout_s": t}
                  for s, c, t in zip(self.specs, self.checks, self.timeouts)]
        config += [stage.manifest_config() for stage in self.judges]
        return config + ([self.gate.config()] if self.gate else [])

    @property
    def stats(self) -> dict:
        """Per judge name: this session's calls, cache hits, unparsed answers and saved calls."""
        return {stage.config.name: dict(stage.stats) for stage in self.judges}

    # pool lifecycle
    def start(self) -> None:
        """Start the worker pool now (it starts on first use otherwise); workers import in the background."""
        self._start()

    def _start(self) -> None:
        if self._workers or self.jobs <= 0:
            return
        self._ctx = mp.get_context("forkserver")
        short_socket_folder()
        # Import every check module (sympy, the LaTeX parser, ...) once in the fork server, and run the
        # checks' warm-ups there (`Check.preload`), so new and replacement workers start with them loaded
        # and warm. Two workers warming up each on their own took 8-12 s on a loaded 2-core machine,
        # and a generate run's first verdicts (its next rounds) waited for them. The fork server is
        # started once per process: a chain started later reuses it (its workers then warm themselves).
        warm = sorted({module for check in self.checks for module in type(check).preload})
        self._ctx.set_forkserver_preload(["cotforge.checks.chain", *check_modules(), *warm])
        self._workers = [self._spawn() for _ in range(self.jobs)]

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.specs, self.worker_memory)

    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.kill()
        self._workers = []
        for stage in self.judges:
            stage.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # judging
    def run(self, samples: list[dict]) -> list[Result]:
        """Rules, then each judge on what the rules left open, then the verification gate."""
        results = self._run_rules(samples)
        for stage in self.judges:
            stage.judge_open(samples, results, self.rule_names)
        return self.gate.apply(results) if self.gate else results

    def _run_rules(self, samples: list[dict]) -> list[Result]:
        if self.jobs <= 0:
            return [Result(run_checks(self.checks, s), s.get("answer"), s.get("language")) for s in samples]
        self._start()
        results: list[Result | None] = [None] * len(samples)
        queue: deque = deque((i, s, None) for i, s in enumerate(samples))
        crashes: Counter = Counter()
        while queue or any(w.inflight for w in self._workers):
            for worker in self._workers:
                # Up to two batches in flight: the worker never waits on the parent between batches.
                if len(worker.inflight) <= BATCH and queue:
                    batch = [queue.popleft() for _ in range(min(BATCH, len(queue)))]
                    if not worker.inflight:
                        worker.status[0], worker.status[2] = batch[0][0], 0.0
                    worker.inflight.update({item: (sample, skip) for item, sample, skip in batch})
                    try:
                        worker.conn.send(batch)
                    except OSError:  # died before reading: supervision below replaces it
                        worker.process.join(timeout=1)
            busy = [w for w in self._workers if w.inflight]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.05)
            for worker in busy:
                if worker.conn in ready:
                    try:
                        while worker.conn.poll():
                            item, verdicts, answer, language = worker.conn.recv()
                            if item == ENVIRONMENT:  # verdicts holds the message
                                raise MissingDependency(verdicts)
                            worker.inflight.pop(item, None)
                            results[item] = Result(verdicts, answer, language)
                    except (EOFError, OSError):
                        pass
                self._supervise(worker, queue, crashes, results)
        return results  # type: ignore[return-value]

    def _supervise(self, worker: _Worker, queue: deque, crashes: Counter, results: list) -> None:
        item, check_index, started = int(worker.status[0]), int(worker.status[1]), worker.status[2]
        overran = started > 0 and time.monotonic() - started > self.timeouts[check_index]
        died = not worker.process.is_alive()
        if not (overran or died) or not worker.inflight:
            return
        exitcode = worker.process.exitcode
        worker.kill()
        index = self._workers.index(worker)
        self._workers[index] = self._spawn()
        if not overran:
            self.worker_deaths += 1
        for pending, (sample, skip) in worker.inflight.items():
            if pending == item and overran:
                skip = dict(skip or {})
                skip[check_index] = Verdict.fail(f"timeout: over {self.timeouts[check_index]:g}s", code=TIMEOUT)
            elif pending == item:
                # A worker can die for reasons outside the item (OOM killer, a kill): the item gets a
                # fresh worker, and only an item that kills its worker again is judged by that.
                crashes[item] += 1
                if crashes[item] < 2:
                    self.retried += 1
                else:
                    self.died_twice += 1
                    verdict = Verdict.fail(f"worker died (exit code {exitcode}) in this check, again on a "
                                           f"fresh worker", code=WORKER_DIED)
                    if started > 0:
                        skip = dict(skip or {})
                        skip[check_index] = verdict
                    else:
                        results[item] = Result([Verdict.fail(f"worker died (exit code {exitcode}) outside any "
                                                             f"check, again on a fresh worker", code=WORKER_DIED)]
                                               * len(self.checks),
                                               None)
                        continue
            queue.appendleft((pending, sample, skip))

    def infrastructure(self) -> dict:
        """Worker deaths this chain saw: retried items, and items that killed a fresh worker again."""
        return {"worker_deaths": self.worker_deaths, "retried": self.retried, "died_twice": self.died_twice}
