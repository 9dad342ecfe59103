"""Unfinished runs as sources (issue 23, items 1 and 8): `filter`, `rewrite` (and `export`, `mix`) refuse a
run whose status is `running` unless --allow-partial; what they then write carries the partial mark to
the data card; `view` says a run is unfinished; review decisions survive --overwrite.

The live source is a real `cotforge generate` against a scripted OpenAI-compatible server on loopback that
answers the first prompts and then holds its answers until the test lets them go: the run is being
written while it is filtered.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, cotforge_process
from servers import ScriptedServer, chat_answer

from cotforge.io.rundir import RunDir


def sum_prompts(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i:03d}", "prompt": f"Compute {i} + {i}.", "gold": str(2 * i)})
                            + "\n" for i in range(count)))
    return path


def solver(gate: threading.Event, answered_freely: int):
    """Answers 'Compute A + B.' correctly; after `answered_freely` calls, holds each answer until `gate`."""
    calls = []
    lock = threading.Lock()

    def answer(body: dict) -> tuple:
        with lock:
            calls.append(1)
            held = len(calls) > answered_freely
        if held:
            gate.wait(120)
        a, b = map(int, re.findall(r"\d+", body["messages"][-1]["content"])[:2])
        reply = chat_answer()
        reply["choices"][0]["message"]["content"] = f"<think>{a} + {b} = {a + b}</think> The answer is \\boxed{{{a + b}}}."
        return 200, {}, reply

    return answer


def wait_for(predicate, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_live_generate_run_is_refused_as_a_source_and_partial_output_is_marked(tmp_path, cli):
    prompts = sum_prompts(tmp_path / "p.jsonl", 40)
    gate = threading.Event()
    live = tmp_path / "K"
    with ScriptedServer([solver(gate, answered_freely=3)]) as server:
        process = cotforge_process("generate", prompts, "--out", live, "--engine", "openai", "--base-url",
                                   server.base_url, "--model", "m", "--k", "1", "--max-rounds", "1", "--checks",
                                   "answer", "--jobs", "0", "--shard-size", "1", "--concurrency", "2")
        try:
            wait_for(lambda: len(list((live / "samples").glob("part-*.parquet"))) >= 3, "3 committed shards")
            committed = RunDir(live).count_rows("samples")
            assert RunDir(live).unfinished() == "running"

            refused = cli("filter", live, "--out", tmp_path / "F", "--checks", "answer", "--jobs", "0")
            assert refused.returncode == 1, refused.stdout
            assert refused.stderr.strip().splitlines() == [
                f"{live}: unfinished generate run (status running); rerun its command to finish it, or pass "
                f"--allow-partial to filter the {committed} rows committed so far"]
            assert not (tmp_path / "F").exists()  # refused before any output folder was made

            refused = cli("rewrite", live, "--out", tmp_path / "RW", "--engine", "openai", "--model", "m")
            assert refused.returncode == 1 and "unfinished generate run" in refused.stderr
            assert "--allow-partial to rewrite" in refused.stderr and not (tmp_path / "RW").exists()

            filtered = cli("filter", live, "--out", tmp_path / "F", "--checks", "answer", "--jobs", "0",
                           "--allow-partial", check=True)
            assert f"rows read {committed}: accepted {committed}" in filtered.stdout
            marks = RunDir(tmp_path / "F").partial_marks()
            assert marks == [f"`K` was an unfinished generate run (status running) when `cotforge filter` read it "
                             f"with --allow-partial: only the {committed} rows it had committed by then."]

            # The filter run is complete, but what it holds is partial: export's card says so.
            cli("export", tmp_path / "F", "--out", tmp_path / "ds", check=True)
            card = (tmp_path / "ds" / "README.md").read_text()
            assert f"**Partial data.** {marks[0]}" in card

            # ... and so does anything made from it in turn (a mix of F, a filter of F).
            recipe = tmp_path / "mix.yaml"
            recipe.write_text(f"name: m\nseed: 1\nsources:\n  - name: f\n    path: {tmp_path / 'F'}\n")
            cli("mix", recipe, "--out", tmp_path / "M", check=True)
            cli("export", tmp_path / "M", "--out", tmp_path / "ds2", check=True)
            assert marks[0] in (tmp_path / "ds2" / "README.md").read_text()
            cli("filter", tmp_path / "F", "--out", tmp_path / "G", "--checks", "format", "--jobs", "0", check=True)
            assert RunDir(tmp_path / "G").partial_marks() == marks
        finally:
            gate.set()
            out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    finished = cli("filter", live, "--out", tmp_path / "F2", "--checks", "answer", "--jobs", "0", check=True)
    assert "rows read 40: accepted 40" in finished.stdout
    assert RunDir(tmp_path / "F2").partial_marks() == []  # a finished source leaves no mark


def killed_run(tmp_path: Path, cli) -> Path:
    """A run as a kill leaves it: rows committed, status still `running` (what the manifest of a run killed
    mid-way holds; made here by a real filter whose status is put back, to keep the test fast)."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"What is {i} + {i}?", "gold": str(2 * i),
                                          "completion": f"<think>{i} + {i}</think> The answer is \\boxed{{{2 * i}}}."})
                              + "\n" for i in range(12)))
    cli("filter", source, "--out", tmp_path / "K", "--checks", "format", "--jobs", "0", check=True)
    RunDir(tmp_path / "K").update_manifest(status="running")
    return tmp_path / "K"


def test_rewrite_refuses_an_unfinished_source_and_marks_its_output(tmp_path, cli, monkeypatch):
    run = killed_run(tmp_path, cli)

    def rewriter(body: dict) -> tuple:
        reply = chat_answer()
        gold = re.search(r"\\boxed\{(\d+)\}", body["messages"][-1]["content"]).group(1)
        reply["choices"][0]["message"]["content"] = f"|special_token|so it is {gold}|special_token|The answer is {gold}."
        return 200, {}, reply

    with ScriptedServer([rewriter]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        args = ("rewrite", run, "--out", tmp_path / "RW", "--engine", "openai", "--model", "m")
        refused = cli(*args)
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "unfinished filter run (status running)" in refused.stderr and not server.received
        cli(*args, "--allow-partial", check=True)
    assert RunDir(tmp_path / "RW").partial_marks() == [
        "`K` was an unfinished filter run (status running) when `cotforge rewrite` read it with --allow-partial: "
        "only the 12 rows it had committed by then."]


def test_view_says_a_run_is_unfinished_on_every_page(tmp_path, cli):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from cotforge.view.app import ViewApp

    run = killed_run(tmp_path, cli)
    web = TestClient(ViewApp([run]).asgi(allowed_hosts=["testserver"]), follow_redirects=False)
    note = "Unfinished filter run (status running)"
    for page in ("/run/0", "/run/0/samples", "/run/0/prompts", "/run/0/sql"):
        assert note in web.get(page).text, page
    RunDir(run).update_manifest(status="complete")
    assert note not in web.get("/run/0/samples").text


def test_overwrite_does_not_erase_review_decisions(tmp_path, cli):
    from cotforge.io.review import append_review

    run = killed_run(tmp_path, cli)
    RunDir(run).update_manifest(status="complete")
    append_review(run, "r3", "reject", note="sloppy", reviewer="ann")
    source = tmp_path / "in.jsonl"
    for change in ([], ["--chunk-rows", "5"]):  # the same configuration, or another one
        refused = cli("filter", source, "--out", run, "--checks", "format", "--jobs", "0", "--overwrite", *change)
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert refused.stderr.startswith(f"{run}: holds 1 review decisions made by hand (cotforge view, in "
                                         f"{run / 'reviews'}); --overwrite would erase them")
    assert len(RunDir(run).shards("reviews")) == 1 and RunDir(run).count_rows("samples") == 12


def test_a_review_is_written_under_the_run_lock(tmp_path, cli):
    from cotforge.errors import CotforgeError
    from cotforge.io.review import append_review

    run = killed_run(tmp_path, cli)
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom cotforge.io.lock import FolderLock\n"
                               f"FolderLock.acquire({str(run)!r}, 'filter')\nprint('held', flush=True)\n"
                               "sys.stdin.read()\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline() == "held\n"  # another writer (a rerun with --overwrite) has the folder
        with pytest.raises(CotforgeError, match=r"in use by another cotforge writer \(filter pid"):
            append_review(run, "r3", "reject")
        assert RunDir(run).shards("reviews") == []  # nothing written that the writer could erase
    finally:
        holder.stdin.close()
        holder.wait(30)
    append_review(run, "r3", "reject")  # the folder is free again
    assert len(RunDir(run).shards("reviews")) == 1
