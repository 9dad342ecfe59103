"""Shared test helpers: the ../shared data folder and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COTFORGE_SHARED", REPO.parent / "shared"))


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


@pytest.fixture
def cli():
    return cotforge


REAL_TRACES = Path(__file__).parent / "data" / "real_traces"


@pytest.fixture(scope="session")
def real_traces() -> list[dict]:
    """Public reasoning traces others' models wrote (tests/data/real_traces/README.md says whose)."""
    import json

    return [json.loads(line) for path in sorted(REAL_TRACES.glob("*.jsonl")) for line in path.open(encoding="utf-8")]
