"""The xdist groups reach the workers: a test using a vLLM fixture runs as `<id>@vllm` under
`-n 2 --dist loadgroup`, so every vLLM test of the session shares one worker and one server.

pytest 9.2 moved node ids to a structured `_id`; pytest-xdist 3.8 still rewrites `_nodeid`, so the
groups were silently dropped (pytest-dev/pytest-xdist#1386) and CI started two vLLM servers and ran
vLLM engines on both cores at once. This runs the project's own marking hook in a small inner session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

INNER_CONFTEST = f'''
import importlib.util
import pytest

spec = importlib.util.spec_from_file_location("project_conftest", {str(CONFTEST)!r})
project = importlib.util.module_from_spec(spec)
spec.loader.exec_module(project)
pytest_itemcollected = project.pytest_itemcollected  # the hook under test, as the suite uses it


@pytest.fixture(scope="session")
def vllm_python():
    return "python"  # only its name matters: it is what marks a test `vllm`
'''

INNER_TESTS = '''
import os

def record(request):
    with open(os.environ["GROUPS_LOG"], "a") as log:
        log.write(f"{os.environ['PYTEST_XDIST_WORKER']} {request.node.nodeid}\\n")

def test_plain_1(request): record(request)
def test_vllm_1(vllm_python, request): record(request)
def test_plain_2(request): record(request)
def test_vllm_2(vllm_python, request): record(request)
def test_plain_3(request): record(request)
def test_vllm_3(vllm_python, request): record(request)
'''


@pytest.mark.slow  # an inner pytest -n 2 session: two worker starts, ~5 s quiet
def test_tests_using_a_vllm_fixture_share_one_xdist_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(INNER_CONFTEST)
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    log = tmp_path / "groups.log"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                             "--dist", "loadgroup", "test_inner.py"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**__import__("os").environ, "GROUPS_LOG": str(log)})
    assert result.returncode == 0, result.stdout + result.stderr
    runs = dict(reversed(line.split(" ", 1)) for line in log.read_text().splitlines())
    assert len(runs) == 6
    grouped = {nodeid: worker for nodeid, worker in runs.items() if "vllm" in nodeid.split("::")[-1]}
    assert sorted(grouped) == [f"test_inner.py::test_vllm_{k}@vllm" for k in (1, 2, 3)], runs
    assert len(set(grouped.values())) == 1  # one worker holds the group
    assert all("@" not in nodeid for nodeid in set(runs) - set(grouped))  # the others are free to move
