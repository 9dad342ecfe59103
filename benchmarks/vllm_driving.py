"""How to keep vLLM's batch full when requests arrive one by one: the decision behind `engines/vllm.py`.

Three ways to generate the same workload (P prompts x n samples, same seeds and max_tokens), each fed
the way cotforge's streaming scheduler feeds an engine: at most `max_inflight` sequences outstanding,
a new request submitted as soon as one finishes:
- raw: `LLM.generate` given every prompt at once (the upper bound; no streaming at all),
- step loop: cotforge's `VLLMEngine` (one thread adds requests to the `LLMEngine` and calls `step()`),
- AsyncLLM: vLLM's asyncio engine, one task per request, fed from the same kind of loop.
Each runs on its own engine instance of the same model; raw runs first and last (mean). Last line:
ratio = step loop tokens/s / AsyncLLM tokens/s (>= 1 means the step loop loses nothing by not using
asyncio).

    .venv-vllm/bin/python benchmarks/vllm_driving.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time


def workload(count: int, k: int, max_tokens: int):
    from cotforge.engines.base import Request, SamplingParams

    requests = [Request(f"q{i}", [{"role": "user", "content": f"What is {7 + i} plus {3 + i % 11}? Explain."}],
                        n=k, seed=1000 + 10 * i) for i in range(count)]
    return requests, SamplingParams(temperature=0.8, top_p=0.95, max_tokens=max_tokens)


def step_loop(engine, requests, params, inflight: int) -> tuple[int, float]:
    start = time.perf_counter()
    waiting, outstanding, tokens = list(requests), 0, 0
    while waiting or outstanding:
        while waiting and outstanding + waiting[0].n <= inflight:
            request = waiting.pop(0)
            engine.submit(request, params)
            outstanding += request.n
        for finished in engine.poll(1.0):
            outstanding -= finished.request.n
            tokens += sum(c.completion_tokens for c in finished.completions)
    return tokens, time.perf_counter() - start


def async_llm(folder: str, prompts: list[dict], sampling: list, inflight: int, max_model_len: int):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    async def run() -> tuple[int, float, float]:
        load = time.perf_counter()
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
            model=folder, max_model_len=max_model_len, enforce_eager=True, enable_chunked_prefill=False,
            kv_cache_memory_bytes=2 << 30))
        loaded = time.perf_counter() - load
        slots = asyncio.Semaphore(max(1, inflight // sampling[0].n))  # requests of n sequences each
        tokens = 0

        async def one(index: int) -> None:
            nonlocal tokens
            async with slots:
                async for output in engine.generate(prompts[index], sampling[index], request_id=f"a{index}"):
                    if output.finished:
                        tokens += sum(len(sample.token_ids) for sample in output.outputs)

        await one(0)  # warm-up, not timed
        tokens = 0
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(len(prompts))))
        seconds = time.perf_counter() - start
        engine.shutdown()
        return tokens, seconds, loaded

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 prompts, n=2, 48 tokens")
    parser.add_argument("--inflight", type=float, default=0.5,
                        help="share of the workload's sequences outstanding at once (1: all of it queued)")
    args = parser.parse_args()
    count, k, max_tokens = (16, 2, 48) if args.quick else (48, 4, 128)
    inflight = max(k, int(count * k * args.inflight))  # sequences outstanding; the feed tops them up

    from cotforge.engines.vllm import VLLMEngine

    requests, params = workload(count, k, max_tokens)
    engine = VLLMEngine(model="embedded", max_model_len=1024, enforce_eager=True)
    prompts = [engine.prompt(request) for request in requests]
    sampling = [engine.sampling(request, params) for request in requests]

    def raw() -> tuple[int, float]:
        start = time.perf_counter()
        outputs = engine.llm.generate(prompts, sampling, use_tqdm=False)
        return sum(len(s.token_ids) for o in outputs for s in o.outputs), time.perf_counter() - start

    raw(), step_loop(engine, requests[:2], params, inflight)  # warm-up both paths
    raw_before = raw()
    loop_tokens, loop_seconds = step_loop(engine, requests, params, inflight)
    raw_after = raw()
    folder = engine.llm.llm_engine.vllm_config.model_config.model
    engine.close()
    async_tokens, async_seconds, async_load = async_llm(folder, prompts, sampling, inflight, 1024)
    raw_rate = (raw_before[0] / raw_before[1] + raw_after[0] / raw_after[1]) / 2
    loop_rate, async_rate = loop_tokens / loop_seconds, async_tokens / async_seconds
    print(f"workload: {count} prompts x n={k}, max_tokens {max_tokens}, at most {inflight} sequences in flight")
    print(f"raw LLM.generate, all at once: {raw_rate:.1f} tokens/s")
    print(f"step loop (VLLMEngine): {loop_tokens} tokens in {loop_seconds:.1f}s -> {loop_rate:.1f} tokens/s "
          f"({loop_rate / raw_rate:.2f} of raw)")
    print(f"AsyncLLM (load {async_load:.0f}s): {async_tokens} tokens in {async_seconds:.1f}s -> "
          f"{async_rate:.1f} tokens/s ({async_rate / raw_rate:.2f} of raw)")
    print(f"step loop / AsyncLLM tokens per second: ratio {loop_rate / async_rate:.3f}")


if __name__ == "__main__":
    main()
