"""Installed from a wheel (not editable, run outside the repository) cotforge finds its presets and card template."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = ("pyproject.toml", "setup.py", "README.md", "cotforge", "filters", "data_cards")


def _run(*args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _build_wheel(tmp_path: Path, env: dict) -> Path:
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    for name in SOURCE:
        target = source / name
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, target)
    # setuptools in the test venv: build offline with it; else (Python 3.12+ venvs) pip fetches it
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", source, "-w", tmp_path / "dist",
         cwd=tmp_path, env=env)
    return next((tmp_path / "dist").glob("cotforge-*.whl"))


def _fresh_venv(tmp_path: Path, env: dict) -> Path:
    """A new venv holding only the wheel; the test venv's dependencies are reached through a .pth
    path line (plain paths only: the test venv's own editable cotforge hook is not loaded)."""
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path,
                     env=env).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return venv


@pytest.mark.slow  # builds a wheel and a venv
def test_wheel_install_runs_filter_with_a_preset_and_export_with_its_card(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheel = _build_wheel(tmp_path, env)
    names = zipfile.ZipFile(wheel).namelist()
    assert "cotforge/filters/r1.yaml" in names and "cotforge/data_cards/template.md" in names, names
    venv = _fresh_venv(tmp_path, env)
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
         "-q", wheel, cwd=tmp_path, env=env)

    elsewhere = tmp_path / "elsewhere"  # no filters/ or data_cards/ folder around
    elsewhere.mkdir()
    where = _run(venv / "bin" / "python", "-c", "import cotforge; print(cotforge.__file__)", cwd=elsewhere, env=env)
    assert where.stdout.strip().startswith(str(venv)), where.stdout
    samples = elsewhere / "samples.jsonl"
    rows = [{"id": f"s{n}", "prompt": f"What is {n} + {n}?", "gold": str(2 * n), "domain": "math",
             "completion": f"<think>We add {n} and {n}, which gives {2 * n}.</think>\nThe answer is \\boxed{{{2 * n}}}."}
            for n in range(1, 4)]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cotforge = venv / "bin" / "cotforge"
    _run(cotforge, "filter", samples, "--out", elsewhere / "run", "--checks", "r1", cwd=elsewhere, env=env)
    manifest = json.loads((elsewhere / "run" / "manifest.json").read_text())
    assert "answer" in json.dumps(manifest) and "language" in json.dumps(manifest), manifest
    _run(cotforge, "export", elsewhere / "run", "--out", elsewhere / "export", "--style", "messages",
         cwd=elsewhere, env=env)
    card = (elsewhere / "export" / "README.md").read_text()
    assert "## Columns" in card and "cotforge" in card, card[:500]
