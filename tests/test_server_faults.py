"""Server faults a run rides out, or ends with one line it resumes from (issue 23, items 2, 3, 4 and 7).

The servers are real HTTP servers on 127.0.0.1: `simserver.py` (answers drawn from (prompt, seed), so a
retried call gets the very answer an undisturbed run got, and the faults a broken server makes: blank
answers, cut bodies, answers without choices), really killed and started again on the same port; while
it is down a `Refuser` resets every connection and counts them, so an outage lasts until the client has
retried that often instead of for a guessed time. `ScriptedServer` answers what a unit test needs.
"""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import cotforge_in_process, cotforge_process
from runcheck import assert_same_up_to_cancellation
from servers import Refuser, ScriptedServer, chat_answer, free_port, sim_server

from cotforge.engines import Request, SamplingParams, get_engine
from cotforge.engines.openai.calls import Calls, Job, Pending
from cotforge.engines.openai.fleet import Server
from cotforge.errors import CotforgeError
from cotforge.io.rundir import RunDir
from cotforge.query import run_query

REPO = Path(__file__).resolve().parents[1]
ROWS = "SELECT id, seed, completion, accepted, round FROM samples ORDER BY id"
# Small backoffs so an outage of many retries takes seconds; max_retries 2 so that today's count-only
# budget would end the run within a few refused rounds: the outage window (outage_s) is what holds it.
FAST = ["--engine-option", "backoff_s=0.02", "--engine-option", "backoff_max_s=0.5",
        "--engine-option", "max_retries=2"]


def sum_prompts(path: Path, count: int) -> Path:
    """'Compute A + B.' prompts, each answered right by the simulated server half the time."""
    path.write_text("".join(json.dumps({"id": f"q{i:03d}", "prompt": f"Compute {i} + {2 * i}.", "gold": str(3 * i),
                                        "pass_rate": 0.5}) + "\n" for i in range(count)))
    return path


def args(prompts: Path, out: Path, *urls: str) -> list[str]:
    return [str(prompts), "--out", str(out), "--engine", "openai", *[a for u in urls for a in ("--base-url", u)],
            "--k", "2", "--max-rounds", "2", "--max-tokens", "64", "--checks", "answer", "--jobs", "0",
            "--concurrency", "8", "--shard-size", "4"]


def generate(*arguments: str, background: bool = False):
    """`cotforge generate`: in this process (conftest's runner), or as a process to kill (`background`)."""
    if background:
        return cotforge_process("generate", *arguments)
    return cotforge_in_process("generate", *arguments)


def wait_for_shards(out: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while len(list((out / "samples").glob("part-*.parquet"))) < count:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no shards committed"
        time.sleep(0.02)


def outage(sims, refused_per_server: int) -> None:
    """Kill every server in `sims` (a real kill: what they held is reset), keep each port down until the
    client has been refused `refused_per_server` times there, then start each again on its port."""
    for sim in sims:
        sim.kill()
    with ExitStack() as stack:
        refusers = [stack.enter_context(Refuser(sim.port, refused_per_server)) for sim in sims]
        for refuser in refusers:
            assert refuser.enough.wait(120), f"the client stopped retrying after {refuser.seen} connections"
    for sim in sims:
        sim.start()


def reference(prompts: Path, tmp_path: Path, sim) -> list:
    done = generate(*args(prompts, tmp_path / "ref", sim.base_url))
    assert done.returncode == 0, done.stderr
    return run_query(tmp_path / "ref", ROWS)[1]


@pytest.mark.slow
def test_a_server_killed_and_restarted_mid_run_is_ridden_out(tmp_path):
    prompts = sum_prompts(tmp_path / "p.jsonl", 60)
    with sim_server(slots=8, step_ms=3, prompts=prompts, median_tokens=40) as sim:
        reference(prompts, tmp_path, sim)
        process = generate(*args(prompts, tmp_path / "run", sim.base_url), *FAST, background=True)
        wait_for_shards(tmp_path / "run", 2, process)
        # 8 calls in flight: 40 refusals are 5 refused rounds, each call failed 5 times, past max_retries 2
        outage([sim], refused_per_server=40)
        out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert_same_up_to_cancellation(tmp_path / "run", tmp_path / "ref")  # only cancelled siblings may differ
    assert "server faults this session:" in out and "connection errors" in out, out


@pytest.mark.slow
def test_a_whole_fleet_restarted_is_ridden_out(tmp_path):
    prompts = sum_prompts(tmp_path / "p.jsonl", 60)
    with sim_server(slots=4, step_ms=3, prompts=prompts, median_tokens=40) as a,\
            sim_server(slots=4, step_ms=3, prompts=prompts, median_tokens=40) as b,\
            sim_server(slots=4, step_ms=3, prompts=prompts, median_tokens=40) as c:
        reference(prompts, tmp_path, a)
        process = generate(*args(prompts, tmp_path / "run", a.base_url, b.base_url, c.base_url), *FAST,
                           background=True)
        wait_for_shards(tmp_path / "run", 2, process)
        outage([a, b, c], refused_per_server=16)  # calls hop across three down servers: 48 refusals in all
        out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert_same_up_to_cancellation(tmp_path / "run", tmp_path / "ref")  # only cancelled siblings may differ


@pytest.mark.slow
def test_an_outage_past_outage_s_is_one_line_and_the_rerun_resumes_exactly(tmp_path):
    prompts = sum_prompts(tmp_path / "p.jsonl", 40)
    with sim_server(slots=8, step_ms=3, prompts=prompts, median_tokens=40) as sim:
        reference(prompts, tmp_path, sim)
        command = [*args(prompts, tmp_path / "run", sim.base_url), *FAST]
        process = generate(*command, "--engine-option", "outage_s=1", background=True)
        wait_for_shards(tmp_path / "run", 2, process)
        sim.kill()
        with Refuser(sim.port, 10**9):  # down for good
            out, err = process.communicate(timeout=120)
        assert process.returncode == 1, err[-3000:]
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"{sim.base_url}/chat/completions: gave up after "), last
        assert " attempts in 1 s; last: connection error" in last or " attempts in 2 s; last: connection error" in last
        assert last.endswith("; rerun the same command to resume (committed samples are kept)"), last
        assert RunDir(tmp_path / "run").unfinished() == "running"
        sim.start()  # the server is back: the same command resumes (a longer outage window is no new config)
        resumed = generate(*command, "--engine-option", "outage_s=300")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_up_to_cancellation(tmp_path / "run", tmp_path / "ref")  # only cancelled siblings may differ


class _Host:
    """What a call needs of its engine, recording instead of queueing (for the retry-budget rule alone)."""

    def __init__(self) -> None:
        self.queued, self.failed = [], []

    def queue_front(self, jobs) -> None:
        self.queued += jobs

    def fail(self, error) -> None:
        self.failed.append(str(error))


def test_a_calls_budget_starts_again_once_its_server_has_answered_since():
    host = _Host()
    calls = Calls(host, fleet=None, model="m", max_retries=2, backoff_s=0.01, backoff_max_s=0.01, outage_s=0)
    server = Server("http://127.0.0.1:1/v1", client=None)
    job = Job(Pending(Request("a", []), SamplingParams(), [None]), 0, 1)
    for _ in range(2):  # the server went away: two failed attempts
        calls.requeue(job, server, "connection", "connection error (reset)", server.url)
    assert job.attempts == 2 and not host.failed
    server.last_ok = time.monotonic()  # it came back and answered another call, then went away again
    calls.requeue(job, server, "connection", "connection error (reset)", server.url)
    assert job.attempts == 1 and not host.failed and calls.faults["budget_restarts"] == 1
    calls.requeue(job, server, "connection", "connection error (reset)", server.url)
    calls.requeue(job, server, "connection", "connection error (reset)", server.url)  # 3 in a row: out
    assert len(host.failed) == 1 and "gave up after 3 attempts" in host.failed[0]
    # A request the server keeps failing while it answers others (5xx) gets no fresh budget from them.
    host2 = _Host()
    calls = Calls(host2, fleet=None, model="m", max_retries=2, backoff_s=0.01, backoff_max_s=0.01, outage_s=0)
    job = Job(Pending(Request("b", []), SamplingParams(), [None]), 0, 1)
    for _ in range(3):
        server.last_ok = time.monotonic()
        calls.requeue(job, server, "http_5xx", "HTTP 500: boom", server.url)
    assert len(host2.failed) == 1 and "gave up after 3 attempts" in host2.failed[0]
    # Blank answers: a server that answers others for real in between restarts the budget; one that
    # never does (it blanks everything) ends the call after max_retries + 1.
    host3 = _Host()
    calls = Calls(host3, fleet=None, model="m", max_retries=2, backoff_s=0.01, backoff_max_s=0.01, outage_s=0)
    job = Job(Pending(Request("c", []), SamplingParams(), [None]), 0, 1)
    for _ in range(5):
        server.last_ok = time.monotonic()
        calls.requeue(job, server, "empty_completion", "empty completion", server.url)
    assert not host3.failed and (job.attempts, job.restarts) == (1, 4)  # restarted 4 times: the cap
    for _ in range(2):
        calls.requeue(job, server, "empty_completion", "empty completion", server.url)
    assert len(host3.failed) == 1 and "3 empty completions in a row for one sample" in host3.failed[0]


@pytest.mark.slow
def test_blank_answers_are_retried_counted_apart_and_never_judged(tmp_path):
    prompts = sum_prompts(tmp_path / "p.jsonl", 40)
    with sim_server(slots=8, step_ms=3, prompts=prompts, median_tokens=40) as sim:
        expected = reference(prompts, tmp_path, sim)
        sim.set_faults(blank_every=3)  # every third answer: no text, finish reason stop, 0 completion tokens
        done = generate(*args(prompts, tmp_path / "run", sim.base_url), *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_up_to_cancellation(tmp_path / "run", tmp_path / "ref")  # only cancelled siblings may differ
    assert run_query(tmp_path / "run", "SELECT count(*) FROM samples WHERE completion = ''")[1] == [(0,)]
    found = [line for line in done.stdout.splitlines() if "server faults this session" in line]
    assert found and " empty completions" in found[0], done.stdout
    faults = json.loads((tmp_path / "run" / "manifest.json").read_text())["counts"]["server_faults_this_session"]
    assert faults["empty_completion"] >= len(expected) // 3 - 2


@pytest.mark.slow
def test_a_server_that_answers_only_blanks_stops_the_run_with_one_line(tmp_path):
    prompts = sum_prompts(tmp_path / "p.jsonl", 20)
    with sim_server(slots=8, step_ms=3, prompts=prompts, median_tokens=40, faults={"blank_every": 1}) as sim:
        done = generate(*args(prompts, tmp_path / "run", sim.base_url), *FAST)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{sim.base_url}/chat/completions: 3 empty completions in a row for one sample "
                               f"(finish reason stop, 0 completion tokens)"), lines[0]
    assert lines[0].endswith("rerun the same command to resume (committed samples are kept)")
    assert RunDir(tmp_path / "run").unfinished() == "running"  # never a "complete" run of nothing
    assert RunDir(tmp_path / "run").count_rows("samples") == 0


@pytest.mark.slow
def test_cut_bodies_and_answers_without_choices_are_retried_like_5xx(tmp_path):
    prompts = sum_prompts(tmp_path / "p.jsonl", 40)
    with sim_server(slots=8, step_ms=3, prompts=prompts, median_tokens=40) as sim:
        reference(prompts, tmp_path, sim)
        sim.set_faults(bad_json_every=4, no_choices_every=5)
        done = generate(*args(prompts, tmp_path / "run", sim.base_url), *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_up_to_cancellation(tmp_path / "run", tmp_path / "ref")  # only cancelled siblings may differ
    faults = json.loads((tmp_path / "run" / "manifest.json").read_text())["counts"]["server_faults_this_session"]
    assert faults["bad_json"] > 0 and faults["no_choices"] > 0, faults
    line = next(line for line in done.stdout.splitlines() if "server faults this session" in line)
    assert "200 bodies that were not JSON" in line and "200 answers without choices" in line


def ask(key: str = "a") -> Request:
    return Request(key, [{"role": "user", "content": "hi"}], n=1, seed=0)


@pytest.mark.parametrize("bad", [
    (200, {}, "not json"),                             # a string body: JSON, but no answer object
    (200, {}, {"object": "chat.completion", "choices": []}),
    (200, {}, {"object": "chat.completion"}),           # no choices key at all
    (503, {}, {"error": "overloaded"}),
])
def test_one_bad_body_is_retried_and_counted(bad):
    with ScriptedServer([bad, (200, {}, chat_answer())]) as server:
        engine = get_engine("openai", base_url=server.base_url, model="m", backoff_s=0.01)
        out = engine.generate([ask()], SamplingParams())
        faults = engine.faults
        engine.close()
    assert out[0][0].text == "ok 0" and len(server.received) == 2
    assert sum(n for kind, n in faults.items() if kind != "budget_restarts") == 1, faults


def test_an_invalid_json_200_is_retried_with_a_budget():
    import http.server
    import threading

    bodies = [b'{"choices": [{"mess', b"<html>502 Bad Gateway</html>"]  # cut short; a proxy's page
    sent = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self._send(json.dumps({"data": [{"id": "m"}]}).encode())

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            sent.append(1)
            self._send(bodies[len(sent) - 1] if len(sent) <= len(bodies) else json.dumps(chat_answer()).encode())

        def _send(self, data: bytes):
            self.send_response(200)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        engine = get_engine("openai", base_url=url, model="m", backoff_s=0.01)
        out = engine.generate([ask()], SamplingParams())
        assert out[0][0].text == "ok 0" and engine.faults["bad_json"] == 2
        engine.close()
        sent.clear()
        bodies[:] = [b"{"] * 10
        engine = get_engine("openai", base_url=url, model="m", backoff_s=0.01, max_retries=2, outage_s=0)
        with pytest.raises(CotforgeError, match=r"gave up after 3 attempts in 0 s; last: HTTP 200 but not a JSON "
                                                r"object: '\{'; rerun the same command to resume"):
            engine.generate([ask()], SamplingParams())
        assert len(sent) == 3
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- item 7: unclear errors ------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["not-a-url", "localhost:8000", "ftp://127.0.0.1/v1", "http://", "http://host:port/v1",
                                 "127.0.0.1:8000/v1"])
def test_a_base_url_that_is_no_url_is_one_line_before_anything(tmp_path, url):
    prompts = sum_prompts(tmp_path / "p.jsonl", 2)
    start = time.monotonic()
    done = generate(prompts, "--out", tmp_path / "run", "--engine", "openai", "--base-url", "http://127.0.0.1:9/v1",
                    "--base-url", url, "--model", "m", "--checks", "format")
    assert time.monotonic() - start < 30  # refused up front, not retried as a connection error
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"--base-url {url!r}: not "), lines
    assert "http://127.0.0.1:8000/v1" in lines[0]
    assert not (tmp_path / "run").exists()  # nothing made before the refusal


def test_a_fleet_member_that_cannot_be_reached_is_named_at_the_start(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "hi"}) + "\n")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    reply = chat_answer()
    reply["choices"][0]["message"]["content"] = "<think>x</think> y"
    with ScriptedServer([(200, {}, reply)]) as server:
        done = generate(prompts, "--out", tmp_path / "run", "--engine", "openai", "--base-url", server.base_url,
                        "--base-url", dead, "--model", "m", "--checks", "format", "--k", "1", "--max-rounds", "1")
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "note:" in line]
    assert len(notes) == 1 and notes[0].startswith(f"cotforge: note: {dead} cannot be reached (ConnectError"), notes
    assert "going on with the 1 of 2 servers that answer" in notes[0]


@pytest.mark.parametrize("model", [None, "m"])
def test_an_unreachable_server_says_so(tmp_path, model):
    prompts = sum_prompts(tmp_path / "p.jsonl", 2)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    done = generate(prompts, "--out", tmp_path / "run", "--engine", "openai", "--base-url", dead,
                    *(["--model", model] if model else []), "--checks", "format", "--engine-option", "outage_s=0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"the server cannot be reached ({dead}: ConnectError"), lines
    assert "start it, or fix --base-url" in lines[0]
    assert ("--model" in lines[0]) == (model is None) and "model=NAME" not in lines[0]


def test_no_server_at_the_start_is_waited_for_outage_s_then_one_line(tmp_path):
    prompts = sum_prompts(tmp_path / "p.jsonl", 2)
    dead, also_dead = (f"http://127.0.0.1:{free_port()}/v1" for _ in range(2))
    start = time.monotonic()
    done = generate(prompts, "--out", tmp_path / "run", "--engine", "openai", "--base-url", dead, "--base-url", also_dead,
                    "--model", "m", "--checks", "format", "--engine-option", "outage_s=2")
    assert 2 <= time.monotonic() - start < 30
    assert done.returncode == 1 and "Traceback" not in done.stderr
    note, last = done.stderr.strip().splitlines()
    assert note.startswith(f"cotforge: note: none of the 2 servers can be reached yet ({dead}: ConnectError"), note
    assert "waiting up to 2 s for one to answer" in note
    assert last.startswith(f"none of the 2 servers can be reached ({dead}: ConnectError"), last
    assert last.endswith("start it, or fix --base-url; waited 2 s (outage_s)"), last


def test_a_server_still_loading_at_the_start_is_waited_for(tmp_path):
    """`vllm serve` binds its port at once and refuses connections until its model is loaded: a run
    started beside it waits (a Refuser stands for the loading server: it resets each connection and
    counts them), then runs as if the server had been up, and asks it which model it serves."""
    prompts = sum_prompts(tmp_path / "p.jsonl", 12)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with Refuser(port, 3) as loading:
        process = generate(*args(prompts, tmp_path / "run", url), background=True)
        assert loading.enough.wait(60), process.communicate(timeout=60)
    with sim_server(slots=8, step_ms=3, prompts=prompts, median_tokens=40, port=port) as sim:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        reference(prompts, tmp_path, sim)
    notes = [line for line in err.splitlines() if line.startswith("cotforge: note:")]
    assert len(notes) == 2, err
    assert notes[0].startswith(f"cotforge: note: the server cannot be reached yet ({url}: "), notes[0]
    assert "waiting up to 120 s" in notes[0]
    assert notes[1].startswith(f"cotforge: note: {url} answers after ")
    assert_same_up_to_cancellation(tmp_path / "run", tmp_path / "ref")  # only cancelled siblings may differ
