"""A simulated continuous-batching OpenAI-compatible server (a real HTTP server on 127.0.0.1).

It models what matters for scheduling a GPU server: `slots` sequences decode at once, one token per
slot per decode step (`step_ms` apart); waiting sequences take a slot as soon as one frees
(continuous batching, first come first served); a request returns when all its `n` sequences are
done. Completion lengths are log-normal (median `median_tokens`, `sigma`), cut at `max_tokens` with
finish reason "length"; each prompt of `--prompts` (a JSONL with prompt, gold, pass_rate) is answered
correctly with its pass rate. Lengths and correctness are drawn from (prompt, seed + j), so the same
request gets the same answer.

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


@dataclass(eq=False)
class Sequence:
    length: int
    left: int
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Simulator:
    def __init__(self, slots: int, step_s: float, prompts: dict[str, dict], median_tokens: float, sigma: float,
                 model: str = "sim") -> None:
        self.slots, self.step_s, self.prompts = slots, step_s, prompts
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
        # Faults a broken server makes (POST /faults {"blank_every": 3, ...}, or --blank-every ...): every
        # Nth completion answered with nothing generated, a 200 body that is not JSON, a 200 without choices.
        self.faults = {"blank_every": 0, "bad_json_every": 0, "no_choices_every": 0}
        self.answers = 0  # completion answers sent (what the faults count)

    def reset(self) -> None:
        self.steps = self.busy = self.requests = self.outstanding = self.peak = 0
        self.first_step = self.last_step = None  # steps at the first request and the last answer
        self.timeline = []

    async def run(self) -> None:
        next_at = time.monotonic()
        while True:
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
                seq.left -= 1
                if seq.left <= 0:
                    seq.done.set()
                else:
                    still.append(seq)
            self.active = still
            next_at += self.step_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - self.step_s)  # late steps are not made up

    def draw(self, text: str, seed: int, max_tokens: int) -> tuple[int, bool]:
        digest = hashlib.blake2b(f"{text}\x00{seed}".encode(), digest_size=8).digest()
        rng = random.Random(int.from_bytes(digest, "big"))
        length = max(1, int(rng.lognormvariate(self.mu, self.sigma)))
        spec = self.prompts.get(text, {})
        return min(length, max_tokens), rng.random() < float(spec.get("pass_rate", 0.5)) and length <= max_tokens

    def fault(self) -> str | None:
        """The fault this completion answer gets, counted over the answers sent."""
        self.answers += 1
        for name in ("bad_json", "no_choices", "blank"):
            every = int(self.faults.get(f"{name}_every") or 0)
            if every and self.answers % every == 0:
                return name
        return None

    async def complete(self, body: dict) -> dict:
        self.requests += 1
        if self.first_step is None:
            self.first_step = self.steps
        messages = body.get("messages") or [{"content": body.get("prompt", "")}]
        text = messages[-1]["content"]
        n, seed, max_tokens = int(body.get("n", 1)), int(body.get("seed", 0)), int(body.get("max_tokens", 16))
        draws = [self.draw(text, seed + j, max_tokens) for j in range(n)]
        seqs = [Sequence(length, length) for length, _ in draws]
        self.waiting.extend(seqs)
        for seq in seqs:
            await seq.done.wait()
        self.last_step = self.steps
        gold = self.prompts.get(text, {}).get("gold", "0")
        choices = []
        for j, ((length, correct), seq) in enumerate(zip(draws, seqs)):
            capped = length >= max_tokens
            answer = gold if correct else f"{gold}1"
            filler = " ".join(["step"] * max(0, seq.length - 12))
            content = (f"<think>{filler}" if capped else
                       f"<think>{filler} so it is {answer}.</think> The answer is \\boxed{{{answer}}}.")
            choices.append({"index": j, "finish_reason": "length" if capped else "stop",
                            "message": {"role": "assistant", "content": content}})
        return {"object": "chat.completion", "model": self.model, "choices": choices,
                "usage": {"prompt_tokens": len(text.split()), "completion_tokens": sum(s.length for s in seqs)}}


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
            elif method == "GET" and path.endswith("/models"):
                answer = {"object": "list", "data": [{"id": sim.model, "object": "model"}]}
            elif method == "GET" and path == "/stats":
                answer = {"steps": sim.steps, "busy": sim.busy, "slots": sim.slots, "requests": sim.requests,
                          "outstanding": sim.outstanding, "peak": sim.peak,
                          "first_step": sim.first_step, "last_step": sim.last_step,
                          "timeline": [round(b / (100 * sim.slots), 2) for b in sim.timeline]}
            elif method == "POST" and path == "/stats/reset":
                sim.reset()
            elif method == "POST" and path == "/faults":
                sim.faults.update(json.loads(raw or b"{}"))
                answer = sim.faults
            elif method == "POST" and path.endswith(("/chat/completions", "/completions")):
                answer = await sim.complete(json.loads(raw or b"{}"))
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


async def serve(args: argparse.Namespace) -> None:
    prompts = {}
    if args.prompts:  # read before the server starts: nothing else runs in the loop yet
        for line in Path(args.prompts).read_text().splitlines():
            row = json.loads(line)
            prompts[row["prompt"]] = row
    sim = Simulator(args.slots, args.step_ms / 1000, prompts, args.median_tokens, args.sigma)
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
    parser.add_argument("--blank-every", type=int, default=0, help="every Nth answer empty (a server fault)")
    parser.add_argument("--bad-json-every", type=int, default=0, help="every Nth answer a cut 200 body")
    parser.add_argument("--no-choices-every", type=int, default=0, help="every Nth answer a 200 without choices")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
