"""A simulated continuous-batching OpenAI-compatible server (a real HTTP server on 127.0.0.1).

It models what matters for scheduling a GPU server: `slots` sequences decode at once, one token per
slot per decode step (`step_ms` apart); waiting sequences take a slot as soon as one frees
(continuous batching, first come first served); a request returns when all its `n` sequences are
done. Completion lengths are log-normal (median `median_tokens`, `sigma`), cut at `max_tokens` with
finish reason "length"; each prompt of `--prompts` (a JSONL with prompt, gold, pass_rate) is answered
correctly with its pass rate. Lengths and correctness are drawn from (prompt, seed + j), so the same
request gets the same answer.

Token economy (benchmarks/token_economy.py):
- a sample is identified by (prompt, seed + index): `n=4` from seed s and four single calls with seeds
  s..s+3 are the same four samples;
- `--loop-share` of samples loop: from an onset (drawn in the first `--loop-onset` share of the
  sample's own length) they repeat one sentence of `LOOP_PERIOD` tokens until `max_tokens`;
- `--loop-kind paragraph|language`: loops vLLM's rule cannot see (a paragraph revisited with other text
  in between; a switch into Russian), for cotforge's own early stop;
- `repetition_detection` in the body (vLLM's field) stops a looping sample once `min_count` copies of
  its sentence are out (when `LOOP_PERIOD` lies within the pattern sizes): finish reason `repetition`;
  `--refuse-unknown` answers 400 to that field instead (a server without vLLM's extension);
- `stream: true` answers with server-sent events, one chunk per `--stream-interval` tokens;
- a client that closes its connection aborts its sequences (vLLM does the same): their slots free at
  once. `GET /stats` counts `aborted` sequences and `tokens` decoded;
- `GET /metrics`: vLLM's `vllm:num_requests_running` / `vllm:num_requests_waiting` gauges in its
  Prometheus text format (`--no-metrics`: 404, a server without them).

Time is counted in decode steps: `GET /stats` gives the steps run since the last `POST /stats/reset`
and the slot-steps that decoded a token, so utilization = busy / (slots * steps) does not depend on
how loaded the machine is (a loaded machine makes steps late, not fewer).

    python tests/simserver.py --port 8000 --slots 64 --step-ms 2 --prompts prompts.jsonl

Faults for the fault tests: `--blank-every N` (every Nth answer empty: no text, finish reason stop, 0
completion tokens), `--bad-json-every N` (a 200 body cut short), `--no-choices-every N` (a 200 without
choices), or the same at run time with `POST /faults`. A restart (tests/servers.py `SimHandle.restart`)
is a real one: the process is killed (its connections reset) and a new one listens on the same port.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path


LOOP_SENTENCE = "Wait, let me add the two numbers again to make sure the sum is right."
LOOP_PERIOD = len(LOOP_SENTENCE.split())  # tokens (words) per copy
# Loops a suffix n-gram rule (vLLM's repetition_detection) cannot see, for cotforge's own early stop
# (`--loop-kind`): a paragraph revisited with other text in between (each copy followed by a different
# sentence: no exact period), and a switch into another language (Russian sentences, each its own).
REVISITED = "Let me add the units digits of both numbers again and carry the one over to the tens place."
ASIDE = "Attempt {c} of the check gives nothing new yet."
FOREIGN = "Теперь проверим шаг {c} ещё раз очень внимательно и спокойно."


def loop_words(kind: str, count: int) -> list[str]:
    """The first `count` tokens (words) of a loop of `kind`, from its onset."""
    if kind == "sentence":
        loop = LOOP_SENTENCE.split()
        return [loop[k % LOOP_PERIOD] for k in range(count)]
    words: list[str] = []
    c = 0
    while len(words) < count:
        if kind == "paragraph":
            words += REVISITED.split() + ASIDE.format(c=c).split()
            words[-1] += "\n\n"
        else:
            words += FOREIGN.format(c=c).split()
        c += 1
    return words[:count]


@dataclass(eq=False)
class Sequence:
    length: int
    left: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    tick: asyncio.Event = field(default_factory=asyncio.Event)  # set every stream_interval tokens
    aborted: bool = False

    @property
    def decoded(self) -> int:
        return self.length - self.left


@dataclass
class Draw:
    """What a sample (prompt, seed) is: its natural length, whether it is right, whether and where it loops."""

    length: int  # tokens it decodes (max_tokens for a loop nothing stops)
    correct: bool
    onset: int | None  # the token its loop starts at (None: it does not loop)
    finish: str  # stop | length | repetition


class Simulator:
    def __init__(self, slots: int, step_s: float, prompts: dict[str, dict], median_tokens: float, sigma: float,
                 model: str = "sim", loop_share: float = 0.0, loop_onset: float = 0.5, stream_interval: int = 16,
                 refuse_unknown: bool = False, loop_kind: str = "sentence") -> None:
        self.slots, self.step_s, self.prompts = slots, step_s, prompts
        self.loop_share, self.loop_onset, self.stream_interval = loop_share, loop_onset, stream_interval
        self.refuse_unknown = refuse_unknown
        self.loop_kind = loop_kind  # sentence (vLLM's repetition_detection sees it) | paragraph | language
        self.aborted = self.refused = 0
        self.mu, self.sigma, self.model = math.log(median_tokens), sigma, model
        self.active: list[Sequence] = []
        self.waiting: deque[Sequence] = deque()
        self.steps = 0
        self.busy = 0  # slot-steps that decoded a token
        self.requests = 0
        self.timeline: list[int] = []  # busy slot-steps per 100 steps
        self.outstanding = 0  # sum over steps of sequences held (decoding or waiting)
        self.peak = 0  # most sequences held at once
        self.first_step = self.last_step = None  # steps at the first request and the last answer
        self.frozen = False  # POST /freeze: stop answering anything, connections left open (a hung server)
        # POST /hold {"on": true}: requests are taken in but no step decodes until {"on": false} (lets a
        # test act while it knows which sequences a server holds, instead of guessing a moment).
        self.holding = False
        self.arrived = asyncio.Event()  # set when a sequence is queued: an idle server sleeps until then
        self.idle_since: float | None = None  # while the loop sleeps idle: when its uncounted idle steps began
        # Faults a broken server makes (POST /faults {"blank_every": 3, ...}, or --blank-every ...): every
        # Nth completion answered with nothing generated, a 200 body that is not JSON, a 200 without choices.
        self.faults = {"blank_every": 0, "bad_json_every": 0, "no_choices_every": 0}
        self.answers = 0  # completion answers sent (what the faults count)
        self.no_metrics = False  # --no-metrics: GET /metrics answers 404 (a server without them)

    def metrics(self) -> str:
        """vLLM's two scheduler gauges in its Prometheus text format (vllm/v1/metrics/loggers.py names):
        requests decoding and requests waiting for a slot (one sequence per request here, as cotforge's
        n=1 calls)."""
        running = sum(not seq.aborted for seq in self.active)
        waiting = sum(not seq.aborted for seq in self.waiting)
        labels = f'{{engine="0",model_name="{self.model}"}}'
        return (f"# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
                f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{labels} {float(running)}\n"
                f"# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
                f"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{labels} {float(waiting)}\n")

    def reset(self) -> None:
        self.steps = self.busy = self.requests = self.outstanding = self.peak = self.aborted = 0
        self.first_step = self.last_step = None  # steps at the first request and the last answer
        self.timeline = []
        if self.idle_since is not None:  # idle steps before a reset are not counted
            self.idle_since = time.monotonic()

    async def run(self) -> None:
        next_at = time.monotonic()
        while True:
            if self.holding:
                await asyncio.sleep(self.step_s)
                next_at = time.monotonic()
                continue
            if not self.active and not self.waiting:
                # Idle: sleep until a request queues a sequence (an idle loop stepping every few ms cost
                # ~8% of a core per server), then count the steps slept as the idle steps they were.
                self.arrived.clear()
                self.idle_since = next_at
                await self.arrived.wait()
                self.catch_up()
                self.idle_since = None
                next_at = time.monotonic()
            while self.waiting and len(self.active) < self.slots:
                self.active.append(self.waiting.popleft())
            if self.steps % 100 == 0:
                self.timeline.append(0)
            self.steps += 1
            self.busy += len(self.active)
            self.timeline[-1] += len(self.active)
            held = len(self.active) + len(self.waiting)
            if self.first_step is not None:
                self.outstanding += held
            self.peak = max(self.peak, held)
            still = []
            for seq in self.active:
                if seq.aborted:
                    continue
                seq.left -= 1
                if seq.decoded % self.stream_interval == 0 or seq.left <= 0:
                    seq.tick.set()
                if seq.left <= 0:
                    seq.done.set()
                else:
                    still.append(seq)
            self.active = still
            next_at += self.step_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - self.step_s)  # late steps are not made up

    def catch_up(self) -> None:
        """Count the steps the idle loop slept so far as the idle steps it would have run (nothing held:
        timeline bins, no busy slots); called before anything reads or stamps the step count."""
        if self.idle_since is None:
            return
        slept = max(0, int((time.monotonic() - self.idle_since) / self.step_s))
        self.idle_since += slept * self.step_s
        for _ in range(slept):
            if self.steps % 100 == 0:
                self.timeline.append(0)
            self.steps += 1

    def draw(self, text: str, seed: int, max_tokens: int, detection: dict | None = None) -> Draw:
        """The sample (text, seed): the same whatever else the request asked (n, other seeds)."""
        digest = hashlib.blake2b(f"{text}\x00{seed}".encode(), digest_size=8).digest()
        rng = random.Random(int.from_bytes(digest, "big"))
        length = max(1, int(rng.lognormvariate(self.mu, self.sigma)))
        correct = rng.random() < float(self.prompts.get(text, {}).get("pass_rate", 0.5))
        loops = rng.random() < self.loop_share
        onset = max(1, int(length * rng.uniform(0.05, self.loop_onset)))
        if not loops:
            return Draw(min(length, max_tokens), correct and length <= max_tokens, None,
                        "length" if length >= max_tokens else "stop")
        onset = min(onset, max_tokens)
        caught = detection_point(onset, detection) if self.loop_kind == "sentence" else None
        if caught is not None and caught < max_tokens:
            return Draw(caught, False, onset, "repetition")
        return Draw(max_tokens, False, onset, "length")

    def fault(self) -> str | None:
        """The fault this completion answer gets, counted over the answers sent."""
        self.answers += 1
        for name in ("bad_json", "no_choices", "blank"):
            every = int(self.faults.get(f"{name}_every") or 0)
            if every and self.answers % every == 0:
                return name
        return None

    def admit(self, body: dict) -> tuple[str, list[Draw], list[Sequence]]:
        self.catch_up()
        self.requests += 1
        if self.first_step is None:
            self.first_step = self.steps
        messages = body.get("messages") or [{"content": body.get("prompt", "")}]
        text = messages[-1]["content"]
        n, seed, max_tokens = int(body.get("n", 1)), int(body.get("seed", 0)), int(body.get("max_tokens", 16))
        draws = [self.draw(text, seed + j, max_tokens, body.get("repetition_detection")) for j in range(n)]
        seqs = [Sequence(d.length, d.length) for d in draws]
        self.waiting.extend(seqs)
        self.arrived.set()
        return text, draws, seqs

    def abort(self, seqs: list[Sequence]) -> None:
        """The client went away: free its slots (vLLM aborts a request whose connection closed)."""
        for seq in seqs:
            if not seq.done.is_set() and not seq.aborted:
                seq.aborted = True
                self.aborted += 1
                if seq in self.waiting:
                    self.waiting.remove(seq)

    def content(self, text: str, draw: Draw, upto: int | None = None) -> str:
        """The completion of a sample, or its first `upto` tokens (words)."""
        gold = self.prompts.get(text, {}).get("gold", "0")
        answer = gold if draw.correct else f"{gold}1"
        # Filler words differ from each other, so only a loop repeats (a client-side detector sees one).
        if draw.onset is None:
            words = [f"w{k}" for k in range(max(0, draw.length - 12))]
            tail = [] if draw.finish == "length" else [f"so it is {answer}.</think> The answer is \\boxed{{{answer}}}."]
        else:
            words = [f"w{k}" for k in range(draw.onset)] + loop_words(self.loop_kind, draw.length - draw.onset)
            tail = []
        words = words[:upto] if upto is not None else words
        body = " ".join(words + ([] if upto is not None and upto < draw.length else tail))
        return f"<think>{body}"

    async def complete(self, body: dict, reader: asyncio.StreamReader | None = None) -> dict | None:
        """The answer once every sequence is done; None when the client closed its connection first
        (its sequences are aborted)."""
        text, draws, seqs = self.admit(body)
        done = asyncio.ensure_future(asyncio.gather(*(seq.done.wait() for seq in seqs)))
        gone = asyncio.ensure_future(reader.read(1)) if reader is not None else None
        try:
            await asyncio.wait([t for t in (done, gone) if t], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if gone is not None and not gone.done():
                gone.cancel()
                await asyncio.gather(gone, return_exceptions=True)  # let go of the reader before the next read
        if not done.done():
            done.cancel()
            await asyncio.gather(done, return_exceptions=True)  # retrieved: no "never retrieved" noise
            self.abort(seqs)
            return None
        self.last_step = self.steps
        choices = [{"index": j, "finish_reason": draw.finish,
                    "message": {"role": "assistant", "content": self.content(text, draw)}}
                   for j, draw in enumerate(draws)]
        return {"object": "chat.completion", "model": self.model, "choices": choices,
                "usage": {"prompt_tokens": len(text.split()), "completion_tokens": sum(s.length for s in seqs)}}


def detection_point(onset: int, detection: dict | None) -> int | None:
    """Where vLLM's repetition_detection stops a loop of LOOP_PERIOD tokens starting at `onset`."""
    if not detection:
        return None
    low, high = max(int(detection.get("min_pattern_size") or 1), 1), int(detection.get("max_pattern_size") or 0)
    count = int(detection.get("min_count") or 0)
    if count < 2 or not low <= LOOP_PERIOD <= high:
        # a pattern size that is a multiple of the period also repeats (2 sentences, 3 ...)
        multiples = [m * LOOP_PERIOD for m in range(1, high // LOOP_PERIOD + 1) if m * LOOP_PERIOD >= low]
        if count < 2 or not multiples:
            return None
        return onset + multiples[0] * count
    return onset + LOOP_PERIOD * count


async def handle(sim: Simulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Minimal HTTP/1.1 with keep-alive: enough for httpx and curl."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            raw = await reader.readexactly(int(headers.get("content-length", 0)))
            status, answer = 200, {}
            if sim.frozen:
                await asyncio.Event().wait()  # never answers
            if method == "POST" and path == "/freeze":
                sim.frozen = True
            elif method == "GET" and path == "/metrics" and not sim.no_metrics:
                data = sim.metrics().encode()  # Prometheus text, as vLLM's /metrics (not JSON)
                writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: "
                             f"{len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
                continue
            elif method == "GET" and path.endswith("/models"):
                answer = {"object": "list", "data": [{"id": sim.model, "object": "model"}]}
            elif method == "GET" and path == "/stats":
                sim.catch_up()
                answer = {"steps": sim.steps, "busy": sim.busy, "tokens": sim.busy, "aborted": sim.aborted, "refused": sim.refused,
                          "slots": sim.slots, "requests": sim.requests,
                          "held": sum(not seq.aborted for seq in (*sim.active, *sim.waiting)),
                          "outstanding": sim.outstanding, "peak": sim.peak,
                          "first_step": sim.first_step, "last_step": sim.last_step,
                          "timeline": [round(b / (100 * sim.slots), 2) for b in sim.timeline]}
            elif method == "POST" and path == "/hold":
                sim.holding = bool(json.loads(raw or b"{}").get("on", True))
                answer = {"holding": sim.holding}
            elif method == "POST" and path == "/stats/reset":
                sim.reset()
            elif method == "POST" and path == "/faults":
                sim.faults.update(json.loads(raw or b"{}"))
                answer = sim.faults
            elif method == "POST" and path.endswith(("/chat/completions", "/completions")):
                body = json.loads(raw or b"{}")
                if sim.refuse_unknown and "repetition_detection" in body:
                    sim.refused += 1
                    status, answer = 400, {"error": {"message": "Unrecognized request argument supplied: "
                                                                "repetition_detection"}}
                elif body.get("stream"):
                    await stream(sim, body, writer)
                    return  # an event stream ends with its connection
                else:
                    answer = await sim.complete(body, reader)
                    if answer is None:
                        return  # the client went away: its sequences were aborted
                    fault = sim.fault()
                    if fault == "bad_json":  # a body cut short (a proxy, a server dying mid-write)
                        data = json.dumps(answer).encode()[:40]
                        writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                     f"{len(data)}\r\n\r\n".encode() + data)
                        await writer.drain()
                        continue
                    if fault == "no_choices":
                        answer = {**answer, "choices": []}
                    elif fault == "blank":  # answered without generating: no text, stop, 0 completion tokens
                        answer = {**answer, "usage": {**answer["usage"], "completion_tokens": 0},
                                  "choices": [{**c, "finish_reason": "stop", "message": {"role": "assistant", "content": ""}}
                                              for c in answer["choices"]]}
            else:
                status, answer = 404, {"error": f"no route {method} {path}"}
            if sim.frozen and path != "/freeze":
                await asyncio.Event().wait()  # hung: what was in flight never gets its answer either
            data = json.dumps(answer).encode()
            writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\ncontent-type: "
                         f"application/json\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def stream(sim: Simulator, body: dict, writer: asyncio.StreamWriter) -> None:
    """Server-sent events, one chunk per stream_interval tokens of each sequence, vLLM's chunk shape;
    a write that fails (the client closed) aborts the request. As vLLM: the request's usage in a last
    chunk only with `stream_options.include_usage`, each choice's tokens so far in every chunk with
    `continuous_usage_stats` as well."""
    text, draws, seqs = sim.admit(body)
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage"))
    continuous = include_usage and bool(options.get("continuous_usage_stats"))
    prompt_tokens = len(text.split())
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
    sent = [0] * len(seqs)  # characters of each completion already sent

    def event(payload: dict, tokens: int | None = None) -> bytes:
        if continuous and tokens is not None:
            payload["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                                "total_tokens": prompt_tokens + tokens}
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    try:
        while not all(seq.done.is_set() for seq in seqs):
            ticks = [asyncio.ensure_future(seq.tick.wait()) for seq in seqs if not seq.done.is_set()]
            await asyncio.wait(ticks, return_when=asyncio.FIRST_COMPLETED)
            for tick in ticks:
                tick.cancel()
            for j, (draw, seq) in enumerate(zip(draws, seqs)):
                if not seq.tick.is_set():
                    continue
                seq.tick.clear()
                if seq.done.is_set():
                    continue  # its last chunk goes below, with its finish reason
                so_far = sim.content(text, draw, upto=seq.decoded)
                writer.write(event({"choices": [{"index": j, "delta": {"content": so_far[sent[j]:]},
                                                 "finish_reason": None}]}, seq.decoded))
                sent[j] = len(so_far)
            await writer.drain()
        sim.last_step = sim.steps
        for j, draw in enumerate(draws):
            full = sim.content(text, draw)
            writer.write(event({"choices": [{"index": j, "delta": {"content": full[sent[j]:]},
                                             "finish_reason": draw.finish}]}, seqs[j].length))
        if include_usage:
            writer.write(event({"choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                         "completion_tokens": sum(s.length for s in seqs)}}))
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()
    except (ConnectionError, RuntimeError):
        sim.abort(seqs)
    finally:
        if not all(seq.done.is_set() for seq in seqs):
            sim.abort(seqs)
        writer.close()


async def serve(args: argparse.Namespace) -> None:
    prompts = {}
    if args.prompts:  # read before the server starts: nothing else runs in the loop yet
        for line in Path(args.prompts).read_text().splitlines():
            row = json.loads(line)
            prompts[row["prompt"]] = row
    sim = Simulator(args.slots, args.step_ms / 1000, prompts, args.median_tokens, args.sigma,
                    loop_share=args.loop_share, loop_onset=args.loop_onset, stream_interval=args.stream_interval,
                    refuse_unknown=args.refuse_unknown, loop_kind=args.loop_kind)
    sim.no_metrics = args.no_metrics
    sim.faults.update({"blank_every": args.blank_every, "bad_json_every": args.bad_json_every,
                       "no_choices_every": args.no_choices_every})
    server = await asyncio.start_server(lambda r, w: handle(sim, r, w), "127.0.0.1", args.port, backlog=4096)
    stepper = asyncio.create_task(sim.run())
    print(f"ready http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    async with server:
        await asyncio.gather(server.serve_forever(), stepper)


def main() -> None:
    parser = argparse.ArgumentParser(description="simulated continuous-batching OpenAI-compatible server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--step-ms", type=float, default=2.0)
    parser.add_argument("--median-tokens", type=float, default=300)
    parser.add_argument("--sigma", type=float, default=0.8)
    parser.add_argument("--prompts", help="JSONL of {prompt, gold, pass_rate}")
    parser.add_argument("--loop-share", type=float, default=0.0, help="share of samples that loop to max_tokens")
    parser.add_argument("--loop-onset", type=float, default=0.5,
                        help="a loop starts within this share of the sample's own length")
    parser.add_argument("--stream-interval", type=int, default=16, help="tokens per streamed chunk")
    parser.add_argument("--loop-kind", choices=["sentence", "paragraph", "language"], default="sentence",
                        help="what a looping sample does from its onset")
    parser.add_argument("--no-metrics", action="store_true", help="answer 404 to GET /metrics")
    parser.add_argument("--refuse-unknown", action="store_true", help="answer 400 to repetition_detection")
    parser.add_argument("--blank-every", type=int, default=0, help="every Nth answer empty (a server fault)")
    parser.add_argument("--bad-json-every", type=int, default=0, help="every Nth answer a cut 200 body")
    parser.add_argument("--no-choices-every", type=int, default=0, help="every Nth answer a 200 without choices")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
